import Crypto

/// SHA-256, which pins the dataset's content and checksums every checkpoint: swift-crypto's
/// (BoringSSL, with the CPU's SHA extensions). It replaced a hand-written Swift version that
/// hashed the 47 MB MNIST training images 6-10× slower (docs/performance.md); every run start
/// and every resume hashes the data, so that time was the user's.
public struct SHA256 {
    private var hasher = Crypto.SHA256()

    public init() {}

    public static func hex(_ bytes: UnsafeRawBufferPointer) -> String {
        var sha = SHA256()
        sha.update(bytes)
        return sha.finalizeHex()
    }

    public static func hex<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        Array(bytes).withUnsafeBytes { hex($0) }
    }

    public mutating func update(_ data: UnsafeRawBufferPointer) {
        hasher.update(bufferPointer: data)
    }

    /// The digest as 64 lower-case hex digits.
    public mutating func finalizeHex() -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(64)
        for byte in hasher.finalize() {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
