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

    public var labelCounts: [Int] {
        var c = [Int](repeating: 0, count: classCount)
        for l in labels { c[Int(l)] += 1 }
        return c
    }
}
