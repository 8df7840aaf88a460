import Foundation
import NNNumerics

/// A data set's inputs as compressed sparse rows: record i's non-zero inputs are
/// `columns[p]`, `values[p]` for p in `offsets[i] ..< offsets[i+1]`, in column order. Built once
/// per data set (not per batch): the sparse first layer reads a batch's records from it.
///
/// `@unchecked Sendable`: the buffers are written in `init` only.
public final class SparseRows: @unchecked Sendable {
    public let offsets: UnsafeMutableBufferPointer<Int>
    public let columns: UnsafeMutableBufferPointer<Int32>
    public let values: UnsafeMutableBufferPointer<Float>
    public let records: Int
    public let features: Int
    public let nonZeros: Int
    /// The data set it was built from (the engine checks it trains on that one).
    public let source: ObjectIdentifier

    /// Non-zeros / (records × features).
    public var density: Double { Double(nonZeros) / Double(max(1, records * features)) }

    public init(_ data: Dataset) {
        let n = data.count
        let f = data.featureCount
        let x = data.features.pointer
        let nonZeros = Self.nonZeroCount(data)
        offsets = .allocate(capacity: n + 1)
        columns = .allocate(capacity: max(1, nonZeros))
        values = .allocate(capacity: max(1, nonZeros))
        var p = 0
        for r in 0..<n {
            offsets[r] = p
            let row = x + r * f
            for k in 0..<f where row[k] != 0 {
                columns[p] = Int32(k)
                values[p] = row[k]
                p += 1
            }
        }
        offsets[n] = p
        self.nonZeros = nonZeros
        records = n
        features = f
        source = ObjectIdentifier(data)
    }

    /// The share of inputs that are not zero, without building the index (for `auto`).
    public static func density(of data: Dataset) -> Double {
        Double(nonZeroCount(data)) / Double(max(1, data.count * data.featureCount))
    }

    static func nonZeroCount(_ data: Dataset) -> Int {
        let x = data.features.pointer
        var nonZeros = 0
        for i in 0..<(data.count * data.featureCount) where x[i] != 0 { nonZeros += 1 }
        return nonZeros
    }

    deinit {
        offsets.deallocate()
        columns.deallocate()
        values.deallocate()
    }
}
