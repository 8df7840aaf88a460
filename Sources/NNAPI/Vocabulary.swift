/// The names a run spec chooses from. They live here, at the bottom of the module graph, so
/// that the spec, the engine that implements them and nnctl's `--help` share one spelling.

/// Hidden-layer activation. The output layer is always softmax.
public enum Activation: String, Codable, Sendable, CaseIterable {
    case logistic, tanh, relu
}

/// Weight initialisation (seed: `xavier` uniform ±√(6/(n_in+n_out)), `he` normal σ=√(2/n_in)).
public enum Initialisation: String, Codable, Sendable, CaseIterable {
    case xavier, he
}

/// The update rule; see `Optimizer.swift` in NNEngine for the equations.
public enum OptimizerKind: String, Codable, Sendable, CaseIterable {
    case sgd, momentum, adam
}

/// Which of a run's data sets an evaluation reads.
public enum EvaluationData: String, Codable, Sendable, CaseIterable {
    case test, train
}

/// Weight file formats of `GET /v1/runs/{id}/export`.
public enum ExportFormat: String, Codable, Sendable, CaseIterable {
    /// safetensors with nnd's metadata: the checkpoint as it is stored.
    case safetensors
    /// numpy's .npz in the seed's `loadWeights` layout.
    case npz
}
