/// The names a run spec chooses from. They live here, at the bottom of the module graph, so
/// that the spec, the engine that implements them and nnctl's `--help` share one spelling.

/// A string enum of the API whose decoding error lists the values it takes
/// (`'swish' is not one of logistic, tanh, relu`) instead of Foundation's generic text.
public protocol WireEnum: RawRepresentable, CaseIterable, Codable, Sendable where RawValue == String {}

extension WireEnum {
    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        let raw = try container.decode(String.self)
        guard let value = Self(rawValue: raw) else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "'\(raw)' is not one of \(Self.valueList)")
        }
        self = value
    }

    /// `logistic, tanh, relu`.
    public static var valueList: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// Hidden-layer activation. The output layer is always softmax.
public enum Activation: String, WireEnum {
    case logistic, tanh, relu
}

/// Weight initialisation (seed: `xavier` uniform ±√(6/(n_in+n_out)), `he` normal σ=√(2/n_in)).
public enum Initialisation: String, WireEnum {
    case xavier, he
}

/// The update rule; see `Optimizer.swift` in NNEngine for the equations.
public enum OptimizerKind: String, WireEnum {
    case sgd, momentum, adam
}

/// How the first layer reads its inputs (`model.input_path`).
public enum InputPath: String, WireEnum {
    case auto, dense, sparse
}

/// The program that starts the processes of a distributed run.
public enum Launcher: String, WireEnum {
    case mpirun, srun
}

/// Which of a run's data sets an evaluation reads.
public enum EvaluationData: String, WireEnum {
    case test, train
}

/// Weight file formats of `GET /v1/runs/{id}/export`.
public enum ExportFormat: String, WireEnum {
    /// safetensors with nnd's metadata: the checkpoint as it is stored.
    case safetensors
    /// numpy's .npz in the seed's `loadWeights` layout.
    case npz
    /// A standard ONNX graph (opset 13) for any ONNX runtime: input [N, inputs], output
    /// probabilities [N, classes].
    case onnx
}
