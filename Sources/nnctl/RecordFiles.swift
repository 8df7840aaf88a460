import Glibc
import NNControl
import NNInflate

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Records to classify, read from the files `nnctl predict` is given: IDX images (plain or
/// .gz), CSV, or 8-bit grayscale PNG. Every value is scaled as the model was trained (pixels
/// and CSV values divided by `scale`). Errors name the file and what is wrong with it.
struct RecordFiles {
    let width: Int
    let scale: Float

    struct Problem: Error, CustomStringConvertible {
        var file: String
        var message: String
        var description: String { "\(file): \(message)" }
    }

    /// The records of every file, in order, and the labels a CSV's first column gave (if any).
    func read(_ paths: [String]) throws -> (inputs: [[Float]], labels: [Int]?) {
        var inputs: [[Float]] = []
        var labels: [Int]? = nil
        for path in paths {
            let bytes = try contents(path)
            if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) {
                inputs.append(try png(bytes, path))
            } else if bytes.count >= 4 && bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0x08 {
                inputs += try idxImages(bytes, path)
            } else {
                let (rows, rowLabels) = try csv(bytes, path)
                inputs += rows
                if let rowLabels { labels = (labels ?? []) + rowLabels }
            }
        }
        return (inputs, labels)
    }

    /// The labels of an IDX label file (plain or .gz).
    static func idxLabels(_ path: String) throws -> [Int] {
        let bytes = try RecordFiles(width: 0, scale: 1).contents(path)
        guard bytes.count >= 8, bytes[0] == 0, bytes[1] == 0, bytes[2] == 0x08, bytes[3] == 1 else {
            throw Problem(file: path, message: "not an IDX label file (magic 0x00000801)")
        }
        let count = bytes[4..<8].reduce(0) { $0 << 8 | Int($1) }
        guard bytes.count >= 8 + count else {
            throw Problem(file: path, message: "truncated: \(count) labels announced, \(bytes.count - 8) present")
        }
        return bytes[8..<(8 + count)].map(Int.init)
    }

    /// The file's bytes, inflated when it is gzip.
    func contents(_ path: String) throws -> [UInt8] {
        let raw: [UInt8]
        do { raw = try LocalFile.bytes(path) } catch { throw Problem(file: path, message: error.reason) }
        guard raw.starts(with: [0x1F, 0x8B]) else { return raw }
        return try inflate(raw, gzip: true, path)
    }

    func idxImages(_ bytes: [UInt8], _ path: String) throws -> [[Float]] {
        let dimensions = Int(bytes[3])
        guard dimensions >= 2, bytes.count >= 4 + 4 * dimensions else {
            throw Problem(file: path, message: "not an IDX image file (\(dimensions) dimensions)")
        }
        let sizes = (0..<dimensions).map { d in bytes[(4 + 4 * d)..<(8 + 4 * d)].reduce(0) { $0 << 8 | Int($1) } }
        let count = sizes[0]
        let recordSize = sizes.dropFirst().reduce(1, *)
        guard recordSize == width else {
            throw Problem(
                file: path,
                message:
                    "records of \(sizes.dropFirst().map(String.init).joined(separator: "×")) = \(recordSize) values; the model takes \(width)"
            )
        }
        let start = 4 + 4 * dimensions
        guard bytes.count >= start + count * recordSize else {
            throw Problem(file: path, message: "truncated: \(count) records announced, the file holds fewer")
        }
        return (0..<count).map { record in
            let offset = start + record * recordSize
            return bytes[offset..<(offset + recordSize)].map { Float($0) / scale }
        }
    }

    /// Rows of `width` values, or of `width + 1` with the label first; a first line that is not
    /// numbers is a header.
    func csv(_ bytes: [UInt8], _ path: String) throws -> ([[Float]], [Int]?) {
        // A spreadsheet's UTF-8 byte-order mark would make the first record look like a header.
        let text = String(
            decoding: bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? bytes.dropFirst(3) : bytes[...], as: UTF8.self)
        var rows: [[Float]] = []
        var labels: [Int] = []
        var labelled: Bool?
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmedWhitespace
            if trimmed.isEmpty { continue }
            let fields = trimmed.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmedWhitespace
            }
            if index == 0 && fields.contains(where: { Float($0) == nil }) { continue }  // header
            let hasLabel = labelled ?? (fields.count == width + 1)
            labelled = hasLabel
            guard fields.count == width + (hasLabel ? 1 : 0) else {
                throw Problem(
                    file: path,
                    message:
                        "line \(index + 1): \(fields.count) fields, expected \(width)\(hasLabel ? " + a label" : "")")
            }
            var values: [Float] = []
            values.reserveCapacity(width)
            for (column, field) in fields.enumerated() {
                guard let value = Float(field), value.isFinite else {
                    throw Problem(
                        file: path,
                        message: "line \(index + 1), column \(column + 1): '\(field.prefix(40))' is not a number")
                }
                if hasLabel && column == 0 {
                    labels.append(Int(value))
                } else {
                    values.append(value / scale)
                }
            }
            rows.append(values)
        }
        guard !rows.isEmpty else { throw Problem(file: path, message: "no records (not IDX, PNG or CSV?)") }
        return (rows, labelled == true ? labels : nil)
    }

    /// An 8-bit grayscale, non-interlaced PNG of the model's input size, as one record.
    func png(_ bytes: [UInt8], _ path: String) throws -> [Float] {
        func be32(_ at: Int) -> Int { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }
        var offset = 8
        var width = 0
        var height = 0
        var compressed: [UInt8] = []
        while offset + 8 <= bytes.count {
            let length = be32(offset)
            let type = String(decoding: bytes[(offset + 4)..<(offset + 8)], as: UTF8.self)
            guard offset + 12 + length <= bytes.count else {
                throw Problem(file: path, message: "truncated \(type) chunk")
            }
            let data = bytes[(offset + 8)..<(offset + 8 + length)]
            switch type {
            case "IHDR":
                width = be32(offset + 8)
                height = be32(offset + 12)
                let depth = data[data.startIndex + 8]
                let color = data[data.startIndex + 9]
                let interlace = data[data.startIndex + 12]
                guard depth == 8, color == 0, interlace == 0 else {
                    throw Problem(
                        file: path,
                        message:
                            "bit depth \(depth), color type \(color), interlace \(interlace): only 8-bit grayscale, non-interlaced PNGs are read"
                    )
                }
            case "IDAT": compressed += data
            default: break
            }
            offset += 12 + length
        }
        guard width * height == self.width else {
            throw Problem(
                file: path, message: "\(width)×\(height) = \(width * height) pixels; the model takes \(self.width)")
        }
        let raw = try inflate(compressed, gzip: false, path)
        guard raw.count == height * (width + 1) else {
            throw Problem(file: path, message: "image data is \(raw.count) bytes, expected \(height * (width + 1))")
        }
        // Undo each scanline's filter (PNG spec, section 9), one byte per pixel.
        var pixels = [UInt8](repeating: 0, count: width * height)
        for row in 0..<height {
            let filter = raw[row * (width + 1)]
            for column in 0..<width {
                let x = raw[row * (width + 1) + 1 + column]
                let a = column > 0 ? Int(pixels[row * width + column - 1]) : 0
                let b = row > 0 ? Int(pixels[(row - 1) * width + column]) : 0
                let c = row > 0 && column > 0 ? Int(pixels[(row - 1) * width + column - 1]) : 0
                let predictor: Int
                switch filter {
                case 0: predictor = 0
                case 1: predictor = a
                case 2: predictor = b
                case 3: predictor = (a + b) / 2
                case 4:
                    let p = a + b - c
                    let (pa, pb, pc) = (abs(p - a), abs(p - b), abs(p - c))
                    predictor = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
                default: throw Problem(file: path, message: "scanline \(row): unknown filter \(filter)")
                }
                pixels[row * width + column] = UInt8(truncatingIfNeeded: Int(x) + predictor)
            }
        }
        return pixels.map { Float($0) / scale }
    }

    /// zlib (PNG) or gzip inflation of a whole buffer, naming the file when it fails.
    func inflate(_ input: [UInt8], gzip: Bool, _ path: String) throws -> [UInt8] {
        do { return try Inflate.decompress(input, format: gzip ? .gzip : .zlib) } catch {
            switch error {
            case .truncated(let after):
                throw Problem(file: path, message: "compressed data is truncated (ended after \(after) bytes)")
            case .corrupt(let message): throw Problem(file: path, message: "compressed data is corrupt: \(message)")
            }
        }
    }
}
