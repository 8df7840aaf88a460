import Foundation
import NNAPI
import NNEngine
import NNNumerics

/// One completed epoch, as kept in the run's history.
/// Everything besides the tensors that a run needs to continue exactly where it stopped.
public struct ResumeState: Codable, Sendable, Equatable {
    /// Current epoch (0-based) and steps already taken in it.
    public var epoch: Int
    public var stepInEpoch: Int
    /// RNG state at the start of the current epoch, before its shuffle: replaying the shuffle
    /// from it reproduces the epoch's order exactly.
    public var epochRNGState: [UInt64]
    public var learningRate: Float
    /// Running sums of the current epoch (cost in Float64, as the loop keeps it).
    public var epochCostSum: Double
    public var epochCorrect: Int
    public var epochRecords: Int
    public var epochSeconds: Double
    /// Optimiser updates applied so far (Adam's t).
    public var updateCount: Int
    public var history: [EpochRecord]
    public var trainingSeconds: Double
    public var workers: Int
    /// SHA-256 of the training and test data content when the run started.
    public var dataHash: String
    /// What the run trains on: all training records loaded (shards included, before any
    /// validation hold-out) and the data fingerprint (see `DataLoading.Loaded.fingerprint`).
    /// Absent in checkpoints written before they were recorded.
    public var trainRecords: Int?
    public var dataFingerprint: String?
    /// The first layer's input path the run chose when it started (`dense` or `sparse`), which
    /// a resume keeps under `model.input_path: auto`. Absent in older checkpoints (dense).
    public var inputPath: String?
    /// Epoch ends averaged so far (`training.average_from_epoch`); the mean itself is the
    /// checkpoint's `average.` tensors until the run finishes, and then its weights. Absent when
    /// the run does not average.
    public var averagedEpochs: Int?
    public var finished: Bool

    /// Whether the run has a mean of epoch-end weights (`training.average_from_epoch` reached).
    public var hasAverage: Bool { (averagedEpochs ?? 0) > 0 }

    public init(
        epoch: Int = 0, stepInEpoch: Int = 0, epochRNGState: [UInt64], learningRate: Float, epochCostSum: Double = 0,
        epochCorrect: Int = 0, epochRecords: Int = 0, epochSeconds: Double = 0, updateCount: Int = 0,
        history: [EpochRecord] = [], trainingSeconds: Double = 0, workers: Int, dataHash: String,
        trainRecords: Int? = nil, dataFingerprint: String? = nil, finished: Bool = false
    ) {
        self.trainRecords = trainRecords
        self.dataFingerprint = dataFingerprint
        self.epoch = epoch
        self.stepInEpoch = stepInEpoch
        self.epochRNGState = epochRNGState
        self.learningRate = learningRate
        self.epochCostSum = epochCostSum
        self.epochCorrect = epochCorrect
        self.epochRecords = epochRecords
        self.epochSeconds = epochSeconds
        self.updateCount = updateCount
        self.history = history
        self.trainingSeconds = trainingSeconds
        self.workers = workers
        self.dataHash = dataHash
        self.finished = finished
    }

    public var bestTestAccuracy: Double? { history.compactMap(\.testAccuracy).max() }

    /// The epoch (1-based) whose weights a run keeps: the best by the validation metric when the
    /// run has validation records (ties: the earliest), else nil.
    public func bestValidationEpoch(by metric: RunSpec.EarlyStoppingMetric) -> Int? {
        var best: EpochRecord?
        for record in history {
            guard let cost = record.validationCost, let accuracy = record.validationAccuracy else { continue }
            guard let current = best else {
                best = record
                continue
            }
            let better =
                switch metric {
                case .validationCost: cost < current.validationCost!
                case .validationAccuracy: accuracy > current.validationAccuracy!
                }
            if better { best = record }
        }
        return best?.epoch
    }
}

/// A checkpoint in memory: the parameters and optimiser state (flat, in the engine's layout)
/// plus the resume state, and a run's mean weights so far when it averages them.
public struct Checkpoint: Sendable, Equatable {
    public var layers: [Int]
    public var parameters: [Float]
    public var optimizerState: [[Float]]
    /// The mean of the weights at the epoch ends averaged so far (`state.averagedEpochs`), which
    /// a resumed run goes on averaging; nil when the run does not average (yet).
    public var averagedParameters: [Float]?
    public var state: ResumeState

    public init(
        layers: [Int], parameters: [Float], optimizerState: [[Float]], averagedParameters: [Float]? = nil,
        state: ResumeState
    ) {
        self.layers = layers
        self.parameters = parameters
        self.optimizerState = optimizerState
        self.averagedParameters = averagedParameters
        self.state = state
    }

    public init(engine: DataParallelEngine, averagedParameters: FloatBuffer? = nil, state: ResumeState) {
        layers = engine.layout.sizes
        parameters = engine.parameters.toArray()
        optimizerState = engine.optimizerState.map { $0.toArray() }
        self.averagedParameters = averagedParameters?.toArray()
        self.state = state
    }

    /// Copies parameters and optimiser state into an engine with the same layout.
    public func restore(into engine: DataParallelEngine) throws {
        guard engine.layout.sizes == layers, parameters.count == engine.parameters.count,
            optimizerState.count == engine.optimizerState.count
        else {
            throw CheckpointError.mismatch(
                "checkpoint is for layers \(layers) with \(optimizerState.count) optimiser buffers; the run has \(engine.layout.sizes) with \(engine.optimizerState.count)"
            )
        }
        engine.parameters.load(parameters)
        for (b, v) in zip(engine.optimizerState, optimizerState) { b.load(v) }
        engine.updateCount = state.updateCount
    }

    public var allFinite: Bool {
        parameters.allSatisfy(\.isFinite) && optimizerState.allSatisfy { $0.allSatisfy(\.isFinite) }
            && (averagedParameters?.allSatisfy(\.isFinite) ?? true)
    }

    /// Per-layer tensors in the seed's names and shapes (`theta_l` is [out, in], `bias_l` is [out]).
    public func layerTensors(from flat: [Float], prefix: String = "") -> [SafeTensors.Tensor] {
        let layout = NetworkLayout(sizes: layers)
        var out: [SafeTensors.Tensor] = []
        for l in 1..<layers.count {
            let w = layout.weightOffsets[l - 1]
            let b = layout.biasOffsets[l - 1]
            out.append(
                .init(
                    name: "\(prefix)theta_\(l)", shape: [layers[l], layers[l - 1]],
                    values: Array(flat[w..<(w + layers[l] * layers[l - 1])])))
            out.append(.init(name: "\(prefix)bias_\(l)", shape: [layers[l]], values: Array(flat[b..<(b + layers[l])])))
        }
        return out
    }

    static func flat(from file: SafeTensors.File, layers: [Int], prefix: String, path: String) throws -> [Float] {
        // Shapes first: only tensors that exist (and so fit in the file) size the allocation,
        // never the metadata's layer list alone.
        var weights: [SafeTensors.Tensor] = []
        var biases: [SafeTensors.Tensor] = []
        for l in 1..<layers.count {
            guard let t = file.tensor("\(prefix)theta_\(l)"), t.shape == [layers[l], layers[l - 1]] else {
                throw CheckpointError.corrupt(
                    path, "tensor \(prefix)theta_\(l) missing or not [\(layers[l]), \(layers[l - 1])]")
            }
            guard let b = file.tensor("\(prefix)bias_\(l)"), b.shape == [layers[l]] else {
                throw CheckpointError.corrupt(path, "tensor \(prefix)bias_\(l) missing or not [\(layers[l])]")
            }
            weights.append(t)
            biases.append(b)
        }
        let layout = NetworkLayout(sizes: layers)
        var flat = [Float](repeating: 0, count: layout.parameterCount)
        for l in 1..<layers.count {
            let t = weights[l - 1]
            let b = biases[l - 1]
            flat.replaceSubrange(
                layout.weightOffsets[l - 1]..<(layout.weightOffsets[l - 1] + t.values.count), with: t.values)
            flat.replaceSubrange(
                layout.biasOffsets[l - 1]..<(layout.biasOffsets[l - 1] + b.values.count), with: b.values)
        }
        return flat
    }

    /// safetensors bytes: weights under the seed's names, optimiser state under `optimizer.<i>.`,
    /// resume state as JSON in the metadata, and a SHA-256 of all of it.
    public func encode() -> [UInt8] {
        var tensors = layerTensors(from: parameters)
        for (i, s) in optimizerState.enumerated() { tensors += layerTensors(from: s, prefix: "optimizer.\(i).") }
        if let averagedParameters { tensors += layerTensors(from: averagedParameters, prefix: "average.") }
        let stateJSON = String(decoding: try! JSONEncoder().encode(state), as: UTF8.self)
        var meta: [String: String] = [
            "format": "pt", "nnd.layers": layers.map(String.init).joined(separator: ","),
            "nnd.optimizer_buffers": String(optimizerState.count), "nnd.state": stateJSON,
        ]
        meta["nnd.sha256"] = Self.contentHash(tensors: tensors, metadata: meta)
        return SafeTensors.encode(.init(tensors: tensors, metadata: meta))
    }

    /// The SHA-256 stored as `nnd.sha256`: tensor names and values in file order, then the
    /// other metadata entries sorted by key. Public so the fuzz harness can re-sign a mutated
    /// file and reach the parsing behind the hash check.
    public static func contentHash(tensors: [SafeTensors.Tensor], metadata: [String: String]) -> String {
        var h = SHA256()
        for t in tensors {
            Array(t.name.utf8).withUnsafeBytes { h.update($0) }
            t.values.withUnsafeBytes { h.update($0) }
        }
        for k in metadata.keys.sorted() where k != "nnd.sha256" {
            Array("\(k)=\(metadata[k]!)".utf8).withUnsafeBytes { h.update($0) }
        }
        return h.finalizeHex()
    }

    public static func decode(_ bytes: [UInt8], path: String) throws -> Checkpoint {
        let file: SafeTensors.File
        do { file = try SafeTensors.decode(bytes, file: path) } catch let e as SafeTensors.FormatError {
            throw CheckpointError.corrupt(path, e.problem)
        }
        guard let stored = file.metadata["nnd.sha256"] else {
            throw CheckpointError.corrupt(path, "no nnd.sha256 in metadata")
        }
        let actual = contentHash(tensors: file.tensors, metadata: file.metadata)
        guard stored == actual else {
            throw CheckpointError.corrupt(path, "content hash \(actual) does not match the stored \(stored)")
        }
        guard let layersText = file.metadata["nnd.layers"], let stateText = file.metadata["nnd.state"],
            let nbuf = file.metadata["nnd.optimizer_buffers"].flatMap(Int.init)
        else {
            throw CheckpointError.corrupt(path, "metadata lacks nnd.layers, nnd.state or nnd.optimizer_buffers")
        }
        let layers = layersText.split(separator: ",", omittingEmptySubsequences: false).map { Int($0) ?? 0 }
        // Found by the fuzzer: a zero or negative size reached NetworkLayout's precondition.
        guard layers.count >= 2, layers.allSatisfy({ $0 > 0 }) else {
            throw CheckpointError.corrupt(
                path, "nnd.layers '\(layersText.prefix(100))' is not a list of at least two positive sizes")
        }
        let state: ResumeState
        do { state = try JSONDecoder().decode(ResumeState.self, from: Data(stateText.utf8)) } catch {
            throw CheckpointError.corrupt(path, "nnd.state is not a valid resume state: \(error)")
        }
        let params = try flat(from: file, layers: layers, prefix: "", path: path)
        let opt = try (0..<nbuf).map { try flat(from: file, layers: layers, prefix: "optimizer.\($0).", path: path) }
        let averaged =
            state.hasAverage && !state.finished
            ? try flat(from: file, layers: layers, prefix: "average.", path: path) : nil
        return Checkpoint(
            layers: layers, parameters: params, optimizerState: opt, averagedParameters: averaged, state: state)
    }
}

public enum CheckpointError: Error, CustomStringConvertible, Sendable {
    case corrupt(String, String)
    case noSpace(String)
    case io(String, String)
    case mismatch(String)
    case nonFinite(String)

    public var description: String {
        switch self {
        case .corrupt(let p, let why): "checkpoint \(p) is unreadable: \(why)"
        case .noSpace(let p): "no space left on device writing checkpoint \(p)"
        case .io(let p, let why): "cannot write checkpoint \(p): \(why)"
        case .mismatch(let why): why
        case .nonFinite(let why): why
        }
    }
}
