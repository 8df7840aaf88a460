import Foundation

/// Where a buffer's memory comes from. The engine injects a NUMA-aware placer;
/// everything else uses `AlignedAllocator`.
public protocol BufferAllocator: Sendable {
    /// Returns zeroed memory of `bytes` bytes aligned to at least 64 bytes.
    func allocate(bytes: Int) -> UnsafeMutableRawPointer
    func deallocate(_ pointer: UnsafeMutableRawPointer, bytes: Int)
    /// A short description for logs and tests ("aligned", "numa node 1", ...).
    var placement: String { get }
}

/// 64-byte aligned heap memory (cache line and AVX-512 friendly).
public struct AlignedAllocator: BufferAllocator {
    public init() {}
    public func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        var p: UnsafeMutableRawPointer?
        let size = max(bytes, 64)
        guard posix_memalign(&p, 64, size) == 0, let p else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        memset(p, 0, size)
        return p
    }
    public func deallocate(_ pointer: UnsafeMutableRawPointer, bytes: Int) { free(pointer) }
    public var placement: String { "aligned" }
}

/// A fixed-size, aligned, zero-initialised buffer of Float32 that is allocated once
/// and never resized. The training step works on raw pointers into these buffers so it
/// neither allocates nor triggers copy-on-write.
///
/// `@unchecked Sendable` because the engine shares one buffer between worker threads:
/// it is safe because every concurrent phase writes disjoint index ranges
/// (a worker's own buffers, or its own slice of the flat gradient), and the phases are
/// separated by `DispatchQueue.concurrentPerform`, which joins all threads before returning.
public final class FloatBuffer: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>
    public let allocator: any BufferAllocator

    public init(count: Int, allocator: any BufferAllocator = AlignedAllocator()) {
        self.count = count
        self.allocator = allocator
        let raw = allocator.allocate(bytes: count * MemoryLayout<Float>.stride)
        self.pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    deinit { allocator.deallocate(UnsafeMutableRawPointer(pointer), bytes: count * MemoryLayout<Float>.stride) }

    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }

    public func zero() { memset(pointer, 0, count * MemoryLayout<Float>.stride) }

    public func copy(from other: FloatBuffer) {
        precondition(other.count == count)
        memcpy(pointer, other.pointer, count * MemoryLayout<Float>.stride)
    }

    public func toArray() -> [Float] { Array(buffer) }

    public func load(_ values: [Float]) {
        precondition(values.count == count, "expected \(count) values, got \(values.count)")
        values.withUnsafeBufferPointer { _ = memcpy(pointer, $0.baseAddress!, count * MemoryLayout<Float>.stride) }
    }
}
