import Foundation

/// The safetensors format: 8-byte little-endian header length, a JSON header mapping tensor
/// names to dtype/shape/byte offsets (plus a string→string `__metadata__`), then the raw
/// little-endian data. Python's `safetensors` and any tool that reads the format load it.
public enum SafeTensors {
    public struct Tensor: Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var values: [Float]
        public init(name: String, shape: [Int], values: [Float]) {
            self.name = name
            self.shape = shape
            self.values = values
        }
    }

    public struct File: Sendable, Equatable {
        public var tensors: [Tensor]
        public var metadata: [String: String]
        public init(tensors: [Tensor], metadata: [String: String]) {
            self.tensors = tensors
            self.metadata = metadata
        }
        public func tensor(_ name: String) -> Tensor? { tensors.first { $0.name == name } }
    }

    public struct FormatError: Error, CustomStringConvertible, Sendable {
        public var file: String, problem: String
        public var description: String { "\(file): \(problem)" }
    }

    /// Serialises; tensors are stored in the given order. Returns the bytes and the data section range.
    public static func encode(_ file: File) -> [UInt8] {
        var header: [String: Any] = [:]
        var offset = 0
        for t in file.tensors {
            let bytes = t.values.count * 4
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]]
            offset += bytes
        }
        if !file.metadata.isEmpty { header["__metadata__"] = file.metadata }
        var json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad the header with spaces so the data starts 8-byte aligned (allowed by the format).
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + json.count + offset)
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        for t in file.tensors { t.values.withUnsafeBytes { out.append(contentsOf: $0) } }
        return out
    }

    public static func decode(_ bytes: [UInt8], file: String) throws -> File {
        func fail(_ p: String) -> FormatError { FormatError(file: file, problem: p) }
        guard bytes.count >= 8 else { throw fail("too short for a safetensors header (\(bytes.count) bytes)") }
        let n = bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard n <= UInt64(bytes.count - 8), n < 100_000_000 else {
            throw fail("header length \(n) exceeds the file size \(bytes.count)")
        }
        let headerEnd = 8 + Int(n)
        guard let header = (try? JSONSerialization.jsonObject(with: Data(bytes[8..<headerEnd]))) as? [String: Any]
        else {
            throw fail("header is not a JSON object")
        }
        let dataStart = headerEnd
        let dataCount = bytes.count - dataStart
        var metadata: [String: String] = [:]
        var tensors: [(Int, Tensor)] = []
        for (name, v) in header {
            if name == "__metadata__" {
                guard let m = v as? [String: String] else { throw fail("__metadata__ must map strings to strings") }
                metadata = m
                continue
            }
            guard let d = v as? [String: Any], let dtype = d["dtype"] as? String, let shape = d["shape"] as? [Int],
                let offs = d["data_offsets"] as? [Int], offs.count == 2
            else { throw fail("tensor '\(name)' has a malformed entry") }
            guard dtype == "F32" else { throw fail("tensor '\(name)' has dtype \(dtype), only F32 is supported") }
            // Overflow-checked: shapes and offsets come from the file, so they may be anything.
            var count = 1
            var overflow = !shape.allSatisfy({ $0 >= 0 })
            for d in shape where !overflow { (count, overflow) = count.multipliedReportingOverflow(by: d) }
            let (byteCount, tooBig) = overflow ? (0, true) : count.multipliedReportingOverflow(by: 4)
            guard !tooBig, offs[0] >= 0, offs[1] >= offs[0], offs[1] <= dataCount, offs[1] - offs[0] == byteCount else {
                throw fail(
                    "tensor '\(name)' shape \(shape) does not match its data offsets \(offs) (data section is \(dataCount) bytes)"
                )
            }
            var values = [Float](repeating: 0, count: count)
            values.withUnsafeMutableBytes { dst in
                bytes.withUnsafeBytes { src in
                    dst.copyMemory(
                        from: UnsafeRawBufferPointer(rebasing: src[(dataStart + offs[0])..<(dataStart + offs[1])]))
                }
            }
            tensors.append((offs[0], Tensor(name: name, shape: shape, values: values)))
        }
        return File(tensors: tensors.sorted { $0.0 < $1.0 }.map(\.1), metadata: metadata)
    }
}
