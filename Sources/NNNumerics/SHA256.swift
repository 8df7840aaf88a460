import COpenSSL

/// SHA-256, which pins the dataset's content and checksums every checkpoint: OpenSSL's libcrypto
/// from Debian (EVP, with the CPU's SHA extensions where it has them). Hashing is on the user's
/// clock (every run start and resume hashes the 47 MB training images), so it is the library's
/// tuned code, not a hand-written one; and a system library rather than swift-crypto, whose
/// vendored BoringSSL (≈ 400 C files) every build compiled again for this one function
/// (docs/performance.md, docs/reliability.md).
///
/// Not copyable: it owns an OpenSSL digest context, which a copy would share (an update through
/// one would change the other's digest); `finalizeHex` consumes it, so a finished digest cannot
/// be updated or finished again.
public struct SHA256: ~Copyable {
    private let context: OpaquePointer

    public init() {
        guard let context = EVP_MD_CTX_new(), EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else {
            fatalError("OpenSSL could not start a SHA-256 digest (out of memory)")
        }
        self.context = context
    }

    deinit { EVP_MD_CTX_free(context) }

    public static func hex(_ bytes: UnsafeRawBufferPointer) -> String {
        var sha = SHA256()
        sha.update(bytes)
        return sha.finalizeHex()
    }

    public static func hex<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        Array(bytes).withUnsafeBytes { hex($0) }
    }

    public mutating func update(_ data: UnsafeRawBufferPointer) {
        guard let base = data.baseAddress, data.count > 0 else { return }
        // EVP_DigestUpdate fails only on a context that was never initialised.
        precondition(EVP_DigestUpdate(context, base, data.count) == 1, "SHA-256 update failed")
    }

    /// The digest as 64 lower-case hex digits.
    public consuming func finalizeHex() -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        precondition(EVP_DigestFinal_ex(context, &digest, &length) == 1 && length == 32, "SHA-256 final failed")
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(64)
        for byte in digest {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
