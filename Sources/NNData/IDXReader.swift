import CZlib
import Foundation
import NNNumerics

/// Reads IDX files (LeCun's MNIST format), plain or gzip-compressed.
/// Refuses anything malformed with a `DataError` naming the file and the problem.
public enum IDXReader {
    public struct Array3: Sendable {
        public var dims: [Int]
        public var bytes: [UInt8]
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
                throw DataError(
                    file: path, isDir.boolValue ? "is a directory, not a file" : "cannot be read (permission denied?)")
            }
            throw DataError(file: path, "no such file")
        }
        let bytes = [UInt8](data)
        return Gzip.isGzip(bytes) ? try Gzip.decompress(bytes, file: path) : bytes
    }

    /// The record count in an IDX file's header (plain or gzip), read without loading the file;
    /// nil when the file is missing or has no valid header. For estimates before loading.
    public static func headerCount(_ path: String) -> Int? {
        guard let file = gzopen(path, "rb") else { return nil }
        defer { gzclose(file) }
        var header = [UInt8](repeating: 0, count: 8)
        guard gzread(file, &header, 8) == 8, header[0] == 0, header[1] == 0, header[2] == 0x08 else { return nil }
        return header[4..<8].reduce(0) { $0 << 8 | Int($1) }
    }

    /// Parses an unsigned-byte IDX file with the expected number of dimensions.
    public static func read(_ path: String, expectedDims: Int) throws -> Array3 {
        let raw = try readFile(path)
        return try parse(raw, file: path, expectedDims: expectedDims)
    }

    public static func parse(_ raw: [UInt8], file: String, expectedDims: Int) throws -> Array3 {
        guard raw.count >= 4 else { throw DataError(file: file, "too short for an IDX header (\(raw.count) bytes)") }
        let magic = raw[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let expectedMagic = UInt32(0x0800) | UInt32(expectedDims)
        guard raw[0] == 0, raw[1] == 0 else {
            throw DataError(
                file: file,
                String(format: "wrong magic 0x%08X, expected 0x%08X (not an IDX file)", magic, expectedMagic))
        }
        guard raw[2] == 0x08 else {
            throw DataError(
                file: file,
                String(format: "wrong magic 0x%08X: element type 0x%02X is not unsigned byte (0x08)", magic, raw[2]))
        }
        guard Int(raw[3]) == expectedDims else {
            throw DataError(
                file: file,
                String(
                    format: "wrong magic 0x%08X, expected 0x%08X (%d dimensions, expected %d)", magic, expectedMagic,
                    raw[3], expectedDims))
        }
        let headerSize = 4 + 4 * expectedDims
        guard raw.count >= headerSize else {
            throw DataError(file: file, "header truncated: \(raw.count) bytes, need \(headerSize)")
        }
        var dims: [Int] = []
        var total = 1
        for d in 0..<expectedDims {
            let off = 4 + 4 * d
            let v = raw[off..<(off + 4)].reduce(0) { $0 << 8 | Int($1) }
            guard v > 0 else { throw DataError(file: file, "dimension \(d) is \(v)") }
            dims.append(v)
            total = total.multipliedReportingOverflow(by: v).overflow ? Int.max : total * v
        }
        let body = raw.count - headerSize
        if body < total {
            throw DataError(
                file: file,
                "truncated body: dims \(dims.map(String.init).joined(separator: "x")) need \(total) bytes, file has \(body)"
            )
        }
        if body > total {
            throw DataError(
                file: file,
                "dims \(dims.map(String.init).joined(separator: "x")) need \(total) bytes but the file has \(body) (\(body - total) extra)"
            )
        }
        return Array3(dims: dims, bytes: Array(raw[headerSize...]))
    }

    /// Loads an images file and its labels file into a `Dataset`, pixels scaled by 1/255.
    public static func loadPair(images: String, labels: String, classCount: Int = 10, limit: Int? = nil) throws
        -> Dataset
    {
        let img = try read(images, expectedDims: 3)
        let lab = try read(labels, expectedDims: 1)
        let n = img.dims[0]
        guard lab.dims[0] == n else {
            throw DataError(file: labels, "has \(lab.dims[0]) labels but \(images) has \(n) images")
        }
        let features = img.dims[1] * img.dims[2]
        for (i, l) in lab.bytes.enumerated() where Int(l) >= classCount {
            throw DataError(file: labels, "label \(l) of record \(i) is outside the class range 0..<\(classCount)")
        }
        let k = min(limit ?? n, n)
        let buf = FloatBuffer(count: k * features)
        img.bytes.withUnsafeBufferPointer { src in
            for i in 0..<(k * features) { buf.pointer[i] = Float(src[i]) / 255 }
        }
        return Dataset(
            features: buf, labels: lab.bytes[0..<k].map { Int32($0) }, featureCount: features,
            classCount: classCount, sources: [images, labels])
    }
}
