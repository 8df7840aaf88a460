import Foundation
import NNNumerics

/// Reads CSV records: one per line, the integer label first, then `featureCount` values divided
/// by `featureScale`. With the default scale 255 (the seed's layout) the values must be integer
/// pixels 0–255; with any other scale they are decimal numbers (e.g. features already in [0, 1]
/// with scale 1). A first line whose first field is not a number is a header and is skipped.
/// A UTF-8 byte-order mark at the start (spreadsheets write one) is not part of the first field.
public enum CSVReader {
    /// The UTF-8 byte-order mark: without skipping it, a file without a header line would lose
    /// its first record, taken for a header because "\u{FEFF}7" is not a number.
    public static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]

    public static func load(
        _ path: String, featureCount: Int = 784, classCount: Int = 10, limit: Int? = nil, featureScale: Float = 255
    ) throws -> Dataset {
        try parse(
            IDXReader.readFile(path), file: path, featureCount: featureCount, classCount: classCount, limit: limit,
            featureScale: featureScale)
    }

    /// Parses CSV bytes; `file` names them in errors.
    public static func parse(
        _ raw: [UInt8], file path: String, featureCount: Int = 784, classCount: Int = 10, limit: Int? = nil,
        featureScale: Float = 255
    ) throws -> Dataset {
        let pixels = featureScale == 255
        var labels: [Int32] = []
        var values: [Float] = []
        var lineNo = 0
        var start = raw.starts(with: byteOrderMark) ? byteOrderMark.count : 0
        func parseLine(_ line: ArraySlice<UInt8>) throws {
            lineNo += 1
            var trimmed = line
            if trimmed.last == UInt8(ascii: "\r") { trimmed = trimmed.dropLast() }
            if trimmed.isEmpty { return }
            if lineNo == 1, trimmed.first.map({ !(48...57).contains($0) }) == true {
                let first = trimmed.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).first ?? []
                if Float(String(decoding: first, as: UTF8.self).trimmingCharacters(in: .whitespaces)) == nil { return }
            }
            let fields = trimmed.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
            guard fields.count == featureCount + 1 else {
                throw DataError(
                    file: path,
                    "line \(lineNo): \(fields.count) columns, expected \(featureCount + 1) (label + \(featureCount) pixels)"
                )
            }
            for (col, f) in fields.enumerated() where col > 0 && !pixels {
                let text = String(decoding: f, as: UTF8.self).trimmingCharacters(in: .whitespaces)
                guard let v = Float(text), v.isFinite else {
                    throw DataError(
                        file: path, "line \(lineNo), column \(col + 1): '\(text.prefix(20))' is not a number")
                }
                values.append(v / featureScale)
            }
            for (col, f) in fields.enumerated() where col == 0 || pixels {
                guard !f.isEmpty, f.count <= 4, f.allSatisfy({ (48...57).contains($0) }) else {
                    throw DataError(
                        file: path,
                        "line \(lineNo), column \(col + 1): '\(String(decoding: f.prefix(20), as: UTF8.self))' is not a non-negative integer"
                    )
                }
                let v = f.reduce(0) { $0 * 10 + Int($1 - 48) }
                if col == 0 {
                    guard v < classCount else {
                        throw DataError(
                            file: path, "line \(lineNo): label \(v) is outside the class range 0..<\(classCount)")
                    }
                    labels.append(Int32(v))
                } else {
                    guard v <= 255 else {
                        throw DataError(file: path, "line \(lineNo), column \(col + 1): pixel \(v) is outside 0...255")
                    }
                    values.append(Float(v) / 255)
                }
            }
        }
        for i in 0..<raw.count where raw[i] == UInt8(ascii: "\n") {
            try parseLine(raw[start..<i])
            start = i + 1
            if let limit, labels.count >= limit { break }
        }
        if start < raw.count, limit.map({ labels.count < $0 }) ?? true { try parseLine(raw[start...]) }
        guard !labels.isEmpty else { throw DataError(file: path, "contains no records") }
        let buf = FloatBuffer(count: values.count)
        buf.load(values)
        return Dataset(
            features: buf, labels: labels, featureCount: featureCount, classCount: classCount, sources: [path])
    }
}
