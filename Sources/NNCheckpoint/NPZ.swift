import CZlib
import Foundation

/// Writes `.npz` files (a zip of `.npy` arrays, stored uncompressed) in the seed's layout so
/// its `loadWeights` reads them: `theta_l` [out, in], `bias_l` [1, out], `lr`, `lam`, `n_nodes`.
public enum NPZ {
    public enum Array: Sendable {
        case float32(shape: [Int], values: [Float])
        case float64Scalar(Double)
        case int64(shape: [Int], values: [Int64])
    }

    public static func seedLayout(_ c: Checkpoint, lambda: Double) -> [(String, Array)] {
        var out: [(String, Array)] = []
        for t in c.layerTensors(from: c.parameters) {
            let shape = t.name.hasPrefix("bias_") ? [1] + t.shape : t.shape
            out.append((t.name, .float32(shape: shape, values: t.values)))
        }
        out.append(("lr", .float64Scalar(Double(c.state.learningRate))))
        out.append(("lam", .float64Scalar(lambda)))
        out.append(("n_nodes", .int64(shape: [c.layers.count], values: c.layers.map(Int64.init))))
        return out
    }

    static func npy(_ a: Array) -> [UInt8] {
        let (descr, shape, body): (String, [Int], [UInt8]) =
            switch a {
            case .float32(let s, let v): ("<f4", s, v.withUnsafeBytes { [UInt8]($0) })
            case .float64Scalar(let d): ("<f8", [], withUnsafeBytes(of: d.bitPattern.littleEndian) { [UInt8]($0) })
            case .int64(let s, let v): ("<i8", s, v.map(\.littleEndian).withUnsafeBytes { [UInt8]($0) })
            }
        let shapeText =
            shape.isEmpty
            ? "()" : shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        while (10 + header.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var out: [UInt8] = [0x93] + Swift.Array("NUMPY".utf8) + [1, 0]
        out += [UInt8(header.utf8.count & 0xff), UInt8(header.utf8.count >> 8)]
        out += Swift.Array(header.utf8)
        return out + body
    }

    public static func encode(_ arrays: [(String, Array)]) -> [UInt8] {
        var out: [UInt8] = []
        var central: [UInt8] = []
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8 & 0xff)] }
        func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(v >> (8 * UInt32($0)) & 0xff) } }
        for (name, a) in arrays {
            let data = npy(a)
            let fname = Swift.Array("\(name).npy".utf8)
            let crc = CRC32.checksum(data)
            let offset = UInt32(out.count)
            // local file header, stored (method 0), no data descriptor
            out += le32(0x0403_4b50) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0x21)
            out +=
                le32(crc) + le32(UInt32(data.count)) + le32(UInt32(data.count)) + le16(fname.count) + le16(0) + fname
                + data
            central += le32(0x0201_4b50) + le16(20) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0x21)
            central +=
                le32(crc) + le32(UInt32(data.count)) + le32(UInt32(data.count)) + le16(fname.count) + le16(0) + le16(0)
            central += le16(0) + le16(0) + le32(0) + le32(offset) + fname
        }
        let cdOffset = UInt32(out.count)
        out += central
        out += le32(0x0605_4b50) + le16(0) + le16(0) + le16(arrays.count) + le16(arrays.count)
        out += le32(UInt32(central.count)) + le32(cdOffset) + le16(0)
        return out
    }
}

/// The ZIP container's CRC-32, from the zlib nnd already links for gzip.
enum CRC32 {
    static func checksum(_ data: [UInt8]) -> UInt32 {
        UInt32(data.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) })
    }
}
