import CZlib

/// Whole-buffer inflation through zlib, shared by the data readers (gzip'd IDX files) and
/// nnctl (gzip'd IDX, PNG image data). A truncated or corrupt stream is an error, never a
/// partial result.
public enum Inflate {
    public enum Format: Sendable {
        /// RFC 1952: `.gz` files.
        case gzip
        /// RFC 1950: PNG's IDAT data.
        case zlib
    }

    public enum Failure: Error, Equatable, Sendable {
        /// The stream ended early; `after` bytes came out of it.
        case truncated(after: Int)
        case corrupt(String)
    }

    public static func decompress(_ input: [UInt8], format: Format) throws(Failure) -> [UInt8] {
        var stream = z_stream()
        let windowBits = format == .gzip ? 16 + MAX_WBITS : MAX_WBITS
        guard inflateInit2_(&stream, windowBits, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw .corrupt("cannot initialise zlib")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8]()
        output.reserveCapacity(input.count * 4)
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        var status: Int32 = Z_OK
        input.withUnsafeBufferPointer { source in
            stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
            stream.avail_in = UInt32(source.count)
            repeat {
                buffer.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = UInt32(chunk)
                    status = inflate(&stream, Z_NO_FLUSH)
                    output.append(contentsOf: out[0..<(chunk - Int(stream.avail_out))])
                }
            } while status == Z_OK && (stream.avail_in > 0 || stream.avail_out == 0)
        }
        switch status {
        case Z_STREAM_END: return output
        case Z_OK, Z_BUF_ERROR: throw .truncated(after: output.count)
        default: throw .corrupt(stream.msg.map { String(cString: $0) } ?? "code \(status)")
        }
    }
}
