import Foundation
import NNAPI
import NNData
import NNNumerics

/// Finds and loads a run's data.
public enum DataLoading {
    /// Where MNIST is looked for when neither the command line nor the spec says:
    /// `$NND_DATA_DIR`, then `~/.local/share/nnd/datasets/mnist` (what `nnd dataset fetch`
    /// fills by default), then `../shared/datasets/mnist` beside the checkout.
    public static func defaultMNISTDirectory() -> String? {
        if let env = ProcessInfo.processInfo.environment["NND_DATA_DIR"], !env.isEmpty { return env }
        let local = defaultFetchDirectory()
        if MNIST.path(MNIST.files[0], in: local) != nil { return local }
        return MNIST.sharedCopy()
    }

    public static func defaultFetchDirectory() -> String {
        let env = ProcessInfo.processInfo.environment
        let base =
            env["XDG_DATA_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? "\(env["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory())/.local/share"
        return "\(base)/nnd/datasets/mnist"
    }

    public struct Loaded: Sendable {
        public var train: Dataset
        public var test: Dataset
        /// SHA-256 over the source files' hashes, to notice changed data on resume.
        public var contentHash: String
        public var files: [String]
        /// SHA-256 of each file's bytes, to name the file that changed.
        public var fileHashes: [String: String]
        /// The training shards read (their image files), in the order they were joined.
        public var shards: [String] = []
        /// Shards in the directory that `onlyShards` left out (their image files): added after
        /// the run started.
        public var shardsNotRead: [String] = []

        /// What a run trained on, in one hash: SHA-256 over the sorted `name sha256` lines of
        /// its data files (so adding, removing or changing a shard changes it).
        public var fingerprint: String {
            let lines = files.map { "\(($0 as NSString).lastPathComponent) \(fileHashes[$0] ?? "")" }.sorted()
            return SHA256.hex(Array(lines.joined(separator: "\n").utf8))
        }
    }

    /// `dataDirOverride` beats the spec's `data.dir` (`nnd train --data`); `fallbackDataDir`
    /// is used only when the spec names none (the daemon's `data_dir`). `onlyShards` (image file
    /// paths) limits the training shards read to those a run started with, so that tonight's
    /// new shard does not change the data under a run resumed after it landed; nil reads every
    /// shard in the directory.
    public static func load(
        spec: RunSpec, dataDirOverride: String? = nil, fallbackDataDir: String? = nil, onlyShards: Set<String>? = nil
    ) throws -> Loaded {
        let train: Dataset
        let test: Dataset
        var read: [String] = []
        var notRead: [String] = []
        if let trainCSV = spec.data.trainCSV, let testCSV = spec.data.testCSV {
            let scale = Float(spec.data.featureScale ?? 255)
            train = try CSVReader.load(
                trainCSV, featureCount: spec.model.layers.first!, classCount: spec.model.layers.last!,
                limit: spec.data.trainLimit, featureScale: scale)
            test = try CSVReader.load(
                testCSV, featureCount: spec.model.layers.first!, classCount: spec.model.layers.last!,
                limit: spec.data.testLimit, featureScale: scale)
        } else {
            guard
                let dir = mnistDirectory(spec: spec, dataDirOverride: dataDirOverride, fallbackDataDir: fallbackDataDir)
            else {
                throw DataError(
                    file: defaultFetchDirectory(),
                    "no MNIST data found; run `nnd dataset fetch mnist` or set data.dir in the spec")
            }
            let present = try MNIST.trainingShards(in: dir)
            let shards = onlyShards.map { only in present.filter { only.contains($0.images) } } ?? present
            read = shards.map(\.images)
            notRead = present.map(\.images).filter { !read.contains($0) }
            if shards.isEmpty {
                train = try MNIST.load(from: dir, train: true, limit: spec.data.trainLimit)
            } else {
                // The base files and every shard, one training set (shuffled together by the trainer).
                let base = try MNIST.load(from: dir, train: true)
                let parts = try shards.map {
                    try IDXReader.loadPair(images: $0.images, labels: $0.labels, classCount: spec.model.layers.last!)
                }
                train = try Dataset.concatenate([base] + parts, limit: spec.data.trainLimit)
            }
            test = try MNIST.load(from: dir, train: false, limit: spec.data.testLimit)
        }
        let files = train.sources + test.sources
        let hashes = try hashFiles(files)
        return Loaded(
            train: train, test: test, contentHash: combined(hashes, files), files: files, fileHashes: hashes,
            shards: read, shardsNotRead: notRead)
    }

    /// The MNIST-layout directory a load of `spec` reads, or nil for a CSV spec (or no data found).
    static func mnistDirectory(spec: RunSpec, dataDirOverride: String? = nil, fallbackDataDir: String?) -> String? {
        if spec.data.trainCSV != nil && spec.data.testCSV != nil { return nil }
        return dataDirOverride ?? spec.data.dir ?? fallbackDataDir ?? defaultMNISTDirectory()
    }

    /// The training shards a load of `spec` would read now (their image files), cheap to list:
    /// a cache of an earlier load compares them to notice tonight's new shard.
    public static func trainingShards(spec: RunSpec, fallbackDataDir: String?) -> [String] {
        guard let dir = mnistDirectory(spec: spec, fallbackDataDir: fallbackDataDir) else { return [] }
        do { return try MNIST.trainingShards(in: dir).map(\.images) } catch {
            return ["unreadable: \(error)"]  // never equal to a good listing: the load reports it
        }
    }

    public static func hashFiles(_ files: [String]) throws -> [String: String] {
        var out: [String: String] = [:]
        for f in files {
            guard let d = FileManager.default.contents(atPath: f) else {
                throw DataError(file: f, "no such file (it was there when the run started?)")
            }
            out[f] = d.withUnsafeBytes { SHA256.hex($0) }
        }
        return out
    }

    public static func combined(_ hashes: [String: String], _ files: [String]) -> String {
        SHA256.hex(Array(files.map { hashes[$0] ?? "" }.joined(separator: ",").utf8))
    }
}
