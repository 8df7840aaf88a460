import Foundation
import NNNumerics

/// A labelled dataset held in memory: features as one contiguous Float32 buffer
/// (row-major, one record per row, scaled to [0, 1]) and labels as class indices.
public final class Dataset: Sendable {
    public let features: FloatBuffer
    public let labels: [Int32]
    public let count: Int
    public let featureCount: Int
    public let classCount: Int
    /// Where it came from, for logs and for checking the files have not changed on resume.
    public let sources: [String]

    public init(features: FloatBuffer, labels: [Int32], featureCount: Int, classCount: Int, sources: [String]) {
        precondition(features.count == labels.count * featureCount)
        self.features = features
        self.labels = labels
        self.count = labels.count
        self.featureCount = featureCount
        self.classCount = classCount
        self.sources = sources
    }

    /// `parts` one after another (the first `limit` records of them): a base training set and
    /// its shards. Every part must have the first one's feature count.
    public static func concatenate(_ parts: [Dataset], limit: Int? = nil) throws -> Dataset {
        let first = parts[0]
        for part in parts.dropFirst() where part.featureCount != first.featureCount {
            throw DataError(
                file: part.sources.first ?? "?",
                "records of \(part.featureCount) values, but \(first.sources.first ?? "the base data") has \(first.featureCount)"
            )
        }
        let total = min(parts.reduce(0) { $0 + $1.count }, limit ?? .max)
        let features = FloatBuffer(count: total * first.featureCount)
        var labels: [Int32] = []
        labels.reserveCapacity(total)
        for part in parts where labels.count < total {
            let take = min(part.count, total - labels.count)
            memcpy(
                features.pointer + labels.count * first.featureCount, part.features.pointer,
                take * first.featureCount * MemoryLayout<Float>.stride)
            labels += part.labels.prefix(take)
        }
        return Dataset(
            features: features, labels: labels, featureCount: first.featureCount,
            classCount: parts.map(\.classCount).max() ?? first.classCount, sources: parts.flatMap(\.sources))
    }

    /// The records at `indices`, in that order, copied into a dataset of their own.
    public func subset(_ indices: [Int]) -> Dataset {
        let rows = FloatBuffer(count: indices.count * featureCount)
        let rowBytes = featureCount * MemoryLayout<Float>.stride
        for (row, index) in indices.enumerated() {
            memcpy(rows.pointer + row * featureCount, features.pointer + index * featureCount, rowBytes)
        }
        return Dataset(
            features: rows, labels: indices.map { labels[$0] }, featureCount: featureCount, classCount: classCount,
            sources: sources)
    }

    /// Random records for benchmarks and tests: each input is non-zero with probability
    /// `density` (1: all of them), with a value in (0, 1], like scaled pixels; uniform labels.
    public static func synthetic(records: Int, features: Int, classes: Int, density: Double = 1, seed: UInt64)
        -> Dataset
    {
        var rng = DeterministicRNG(seed: seed)
        let f = FloatBuffer(count: records * features)
        for i in 0..<f.count where density >= 1 || rng.nextUnit() < density { f[i] = Float(rng.nextUnit()) + 1e-3 }
        let labels = (0..<records).map { _ in Int32(rng.nextIndex(below: classes)) }
        return Dataset(
            features: f, labels: labels, featureCount: features, classCount: classes, sources: ["synthetic"])
    }

    public var labelCounts: [Int] {
        var c = [Int](repeating: 0, count: classCount)
        for l in labels { c[Int(l)] += 1 }
        return c
    }
}
