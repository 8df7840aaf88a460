import Foundation
import NNAPI
import NNData
import NNEngine

/// How much memory a run will hold at its peak, estimated from its spec before anything is
/// allocated, so that a spec too big for the machine is refused instead of ending the daemon
/// (and every run in it) in the kernel's OOM killer.
public struct MemoryEstimate: Sendable, Equatable, CustomStringConvertible {
    /// What the total is made of, in bytes.
    public var parts: [String: Int]
    public var bytes: Int { parts.values.reduce(0, +) }

    public var description: String { Self.format(bytes) }

    /// The training engine (parameters, gradient, optimiser state, every worker's batch
    /// buffers, the sparse first layer's buffers and index, kept copies of the weights), one
    /// evaluation engine (eval, report and the promotion gate build one), a
    /// checkpoint being encoded, and the data set in float32 with its bytes as read.
    public static func of(spec: RunSpec, trainRecords: Int, testRecords: Int, workers: Int) -> MemoryEstimate {
        let sizes = spec.model.layers
        let float = MemoryLayout<Float>.stride
        let parameters = parameterCount(sizes)
        let units = sizes.reduce(0, +)
        let states = OptimizerConfig(kind: spec.training.optimizer).stateBuffers
        let stepSize = spec.stepSize(trainCount: max(trainRecords, 1))
        let maxBatch = min(stepSize, max(1024, workers))
        let rowsPerWorker = (maxBatch + workers - 1) / workers
        let inputs = sizes.first ?? 0
        func times(_ a: Int, _ b: Int) -> Int {
            let (product, overflow) = a.multipliedReportingOverflow(by: b)
            return overflow ? Int.max / 16 : min(product, Int.max / 16)
        }
        // The sparse first layer (a hidden first layer, `model.input_path` auto or sparse): the
        // training data's index of non-zeros, 8 bytes a non-zero at the highest density the path
        // is taken at (auto: `Trainer.autoSparseDensity.sureAbove`; sparse: all inputs), plus
        // W₁ transposed with its gradient and optimiser state, two sets of column indexes, every
        // worker's part of each record's outputs and δ₁'s line-aligned copy (rows padded by < 16),
        // and with more than one worker each record's bounds in every worker's range of inputs.
        var sparse = 0
        if spec.model.inputPath != .dense && sizes.count >= 3 {
            let density = spec.model.inputPath == .sparse ? 1 : Trainer.autoSparseDensity.sureAbove
            let paddedUnits = sizes[1] + 16
            sparse = [
                times(trainRecords, Int((Double(inputs) * density * 8).rounded(.up)) + 8),
                times(times(inputs, paddedUnits), (2 + states) * float),
                times(2 * maxBatch, inputs * 8),
                times(times(workers + 1, maxBatch), paddedUnits * float),
                workers > 1 ? times(trainRecords, workers * 16) : 0,
            ].reduce(0) { min(Int.max / 16, $0 + $1) }
        }
        // Whole copies of the weights a run keeps beside the training ones: the best validation
        // epoch's, or (`training.average_from_epoch`) the running mean and the training weights
        // held while the mean is evaluated; an averaging run's checkpoints carry the mean too.
        let averages = (spec.training.averageFromEpoch ?? 0) > 0
        let keptCopies = ((spec.training.validation ?? 0) > 0 ? 1 : 0) + (averages ? 2 : 0)
        return MemoryEstimate(parts: [
            "parameters, gradient and optimiser state": times(parameters, (2 + states) * float),
            "kept weights (best epoch, mean of epoch ends)": times(parameters, keptCopies * float),
            "sparse first layer": sparse,
            "batch buffers": times(2 * workers * rowsPerWorker + maxBatch, units * float),
            "evaluation engine": times(parameters, 2 * float) + times(2 * 1024, units * float),
            "checkpoint encoding": checkpointBytes(spec: spec),
            "data set": times(trainRecords + testRecords, inputs * (float + 1)),
        ])
    }

    /// Σ n_{l−1}·n_l + n_l, without building a layout (the sizes may be absurd: capped, never
    /// overflowing).
    static func parameterCount(_ sizes: [Int]) -> Int {
        var parameters = 0
        for l in 1..<max(sizes.count, 1) {
            let (product, overflow) = sizes[l - 1].multipliedReportingOverflow(by: sizes[l])
            parameters = overflow ? Int.max / 16 : min(Int.max / 16, parameters + product + sizes[l])
        }
        return parameters
    }

    /// The bytes of one of the spec's checkpoints, less its small JSON state: the parameters,
    /// the optimiser state and, for an averaging run, the running mean, in float32.
    public static func checkpointBytes(spec: RunSpec) -> Int {
        let parameters = parameterCount(spec.model.layers)
        let states = OptimizerConfig(kind: spec.training.optimizer).stateBuffers
        let copies = 1 + states + ((spec.training.averageFromEpoch ?? 0) > 0 ? 1 : 0)
        let (bytes, overflow) = parameters.multipliedReportingOverflow(by: copies * MemoryLayout<Float>.stride)
        return overflow ? Int.max / 16 : min(bytes, Int.max / 16)
    }

    /// The estimate for a spec whose data is found the way `DataLoading.load` finds it: record
    /// counts from the IDX headers (with the spec's limits), or from the CSV files' sizes
    /// (each value takes at least two characters, so records ≤ bytes / (2·inputs)).
    public static func of(spec: RunSpec, fallbackDataDir: String?, workers: Int) -> MemoryEstimate {
        let inputs = max(spec.model.layers.first ?? 1, 1)
        func limited(_ count: Int, _ limit: Int?) -> Int { limit.map { min($0, count) } ?? count }
        var train = 0
        var test = 0
        if let trainCSV = spec.data.trainCSV, let testCSV = spec.data.testCSV {
            func records(_ path: String) -> Int {
                let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
                return size / (2 * inputs) + 1
            }
            train = limited(records(trainCSV), spec.data.trainLimit)
            test = limited(records(testCSV), spec.data.testLimit)
        } else if let dir = spec.data.dir ?? fallbackDataDir ?? DataLoading.defaultMNISTDirectory() {
            func records(_ name: String) -> Int {
                MNIST.path(name, in: dir).flatMap(IDXReader.headerCount) ?? 0
            }
            let shards = ((try? MNIST.trainingShards(in: dir)) ?? []).compactMap { IDXReader.headerCount($0.images) }
            train = limited(records("train-images-idx3-ubyte") + shards.reduce(0, +), spec.data.trainLimit)
            test = limited(records("t10k-images-idx3-ubyte"), spec.data.testLimit)
        }
        return of(spec: spec, trainRecords: train, testRecords: test, workers: workers)
    }

    /// `1.5 GiB`, `640 MiB`, `714 KiB` (a checkpoint of the seed's network).
    public static func format(_ bytes: Int) -> String {
        let gib = Double(bytes) / Double(1 << 30)
        if gib >= 1 { return String(format: "%.1f GiB", gib) }
        if bytes < 1 << 20 { return String(format: "%.0f KiB", Double(bytes) / 1024) }
        return String(format: "%.0f MiB", Double(bytes) / Double(1 << 20))
    }
}

/// How much memory this machine (or the cgroup the process runs in) can give.
public enum MemoryLimits {
    /// MemAvailable from /proc/meminfo.
    public static func available() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kib = Int(fields[1]) { return kib * 1024 }
        }
        return nil
    }

    /// The cgroup v2 `memory.max` of this process (systemd's `MemoryMax=`), nil when unlimited.
    public static func cgroupMax() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("0::") })
        else { return nil }
        var path = "/sys/fs/cgroup" + line.dropFirst(3)
        // A limit set on a parent applies too: the smallest one on the way up.
        var smallest: Int?
        while path.hasPrefix("/sys/fs/cgroup") {
            if let value = try? String(contentsOfFile: "\(path)/memory.max", encoding: .utf8),
                let limit = Int(value.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                smallest = min(smallest ?? limit, limit)
            }
            guard path != "/sys/fs/cgroup" else { break }
            path = (path as NSString).deletingLastPathComponent
        }
        return smallest
    }

    /// What a process may use: the smaller of the cgroup's limit and what is available now.
    public static func usable() -> Int? {
        switch (cgroupMax(), available()) {
        case (let limit?, let free?): min(limit, free)
        case (let limit?, nil): limit
        case (nil, let free?): free
        case (nil, nil): nil
        }
    }
}
