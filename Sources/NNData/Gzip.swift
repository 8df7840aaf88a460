import Foundation
import NNInflate

/// gzip streams through zlib (public so the fuzz harness can drive it directly).
public enum Gzip {
    public static func isGzip(_ data: [UInt8]) -> Bool { data.count >= 2 && data[0] == 0x1f && data[1] == 0x8b }

    /// Inflates a whole gzip file. A truncated or corrupt stream is an error, never a partial result.
    public static func decompress(_ input: [UInt8], file: String) throws -> [UInt8] {
        do { return try Inflate.decompress(input, format: .gzip) } catch {
            switch error {
            case .truncated(let after):
                throw DataError(file: file, "gzip stream is truncated (ended after \(after) decompressed bytes)")
            case .corrupt(let message): throw DataError(file: file, "gzip stream is corrupt: \(message)")
            }
        }
    }
}
