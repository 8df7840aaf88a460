import CNUMA
import Foundation
import NNNumerics

/// The machine's NUMA layout: which CPUs belong to which node. An injected value, so
/// placement can be tested on a fake multi-node topology on a one-node machine.
public struct NUMATopology: Sendable, Equatable, CustomStringConvertible {
    public struct Node: Sendable, Equatable {
        public var id: Int
        public var cpus: [Int]
    }
    public var nodes: [Node]
    /// Whether libnuma works here (false means: allocate without node binding).
    public var numaAvailable: Bool

    public init(nodes: [Node], numaAvailable: Bool) {
        self.nodes = nodes
        self.numaAvailable = numaAvailable
    }

    /// Reads the topology through libnuma; one node with every online CPU when libnuma is unavailable.
    public static func detect() -> NUMATopology {
        let online = onlineCPUs()
        guard numa_available() >= 0 else {
            return NUMATopology(nodes: [Node(id: 0, cpus: online)], numaAvailable: false)
        }
        var byNode: [Int: [Int]] = [:]
        for cpu in online {
            let node = Int(numa_node_of_cpu(Int32(cpu)))
            byNode[max(node, 0), default: []].append(cpu)
        }
        let nodes = byNode.keys.sorted().map { Node(id: $0, cpus: byNode[$0]!) }
        return NUMATopology(nodes: nodes, numaAvailable: true)
    }

    /// CPUs this process may run on, in order.
    public static func onlineCPUs() -> [Int] {
        allowedCPUs(ofProcess: "self") ?? Array(0..<ProcessInfo.processInfo.activeProcessorCount)
    }

    /// The CPUs process `pid` ("self" or a number) may run on, from its Cpus_allowed_list, which
    /// honours taskset, mpirun's binding and cgroup limits (e.g. "0-1" or "0,2-3"); nil if unreadable.
    public static func allowedCPUs(ofProcess pid: String) -> [Int]? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }),
            let cpus = parseCPUList(line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces)),
            !cpus.isEmpty
        else { return nil }
        return cpus
    }

    /// Parses a Linux CPU list such as "0-3,8,10-11".
    public static func parseCPUList(_ text: String) -> [Int]? {
        var out: [Int] = []
        for part in text.split(separator: ",") {
            let ends = part.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            if ends.count == 1, let a = ends[0] {
                out.append(a)
            } else if ends.count == 2, let a = ends[0], let b = ends[1], a <= b {
                out += Array(a...b)
            } else {
                return nil
            }
        }
        return out
    }

    public var cpus: [Int] { nodes.flatMap(\.cpus) }
    public func node(ofCPU cpu: Int) -> Int { nodes.first { $0.cpus.contains(cpu) }?.id ?? nodes.first?.id ?? 0 }
    public var description: String {
        nodes.map { "node \($0.id): cpus \($0.cpus.map(String.init).joined(separator: ","))" }.joined(separator: "; ")
    }
}

/// Which CPU and node each worker belongs to.
public struct WorkerPlacement: Sendable, Equatable {
    public var worker: Int, cpu: Int, node: Int
}

/// How memory and threads are placed.
///
/// Decisions (documented here because they are the point of this type):
/// - Workers are assigned round-robin over the online CPUs in node order, so workers fill
///   node 0's CPUs, then node 1's, and each worker's node is the node of its CPU.
/// - The batch's activations and deltas are one allocation (the weight gradient needs every
///   shard's rows in one matrix), and worker w's band of rows in each of its matrices is bound
///   to w's node (`numa_tonode_memory` before first touch): each worker's forward and backward
///   write memory on its own node. Only the gradient slices after the barrier read other
///   nodes' bands — that is the reduction's traffic, which cannot stay on one node. A page that
///   straddles two bands goes to the band holding its first byte.
/// - The shared parameters, gradient and optimiser state are read by every worker and each
///   slice is written by one worker after the barrier, so no single node is "theirs": they are
///   interleaved page by page over the nodes in use (`numa_alloc_interleaved_subset`), which
///   spreads the traffic instead of making one node's memory controller the hot spot. With
///   one node in use, they are ordinary aligned memory.
/// - `DispatchQueue.concurrentPerform` does not let us pick threads, so the thread that runs
///   worker i's iteration binds itself to worker i's node (`numa_run_on_node`) before touching
///   its buffers. This is only done when the workers span more than one node; on a one-node
///   machine binding would change nothing and cost a syscall per step.
public protocol MemoryPlacer: Sendable {
    var topology: NUMATopology { get }
    func allocator(forNode node: Int) -> any BufferAllocator
    func sharedAllocator(nodes: [Int]) -> any BufferAllocator
    /// One buffer whose byte ranges are bound to the bands' nodes.
    func allocator(bands: [MemoryBand]) -> any BufferAllocator
    func bindCurrentThread(toNode node: Int)
}

/// Byte ranges of one buffer that belong on one node (a worker's rows of the batch matrices).
public struct MemoryBand: Sendable, Equatable {
    public struct Range: Sendable, Equatable { public var byteOffset: Int, byteCount: Int }
    public var node: Int
    public var ranges: [Range]
    public init(node: Int, ranges: [Range]) {
        self.node = node
        self.ranges = ranges
    }
}

extension MemoryPlacer {
    public func plan(workers: Int) -> [WorkerPlacement] {
        let cpus = topology.cpus.isEmpty ? [0] : topology.cpus
        return (0..<workers).map { w in
            let cpu = cpus[w % cpus.count]
            return WorkerPlacement(worker: w, cpu: cpu, node: topology.node(ofCPU: cpu))
        }
    }
}

/// libnuma-backed placement; plain aligned memory when `numa_available() < 0`.
public struct LibNUMAPlacer: MemoryPlacer {
    public let topology: NUMATopology
    public init(topology: NUMATopology = .detect()) { self.topology = topology }

    public func allocator(forNode node: Int) -> any BufferAllocator {
        topology.numaAvailable ? NodeAllocator(node: node) : AlignedAllocator()
    }
    public func sharedAllocator(nodes: [Int]) -> any BufferAllocator {
        let distinct = Array(Set(nodes)).sorted()
        return topology.numaAvailable && distinct.count > 1 ? InterleavedAllocator(nodes: distinct) : AlignedAllocator()
    }
    public func allocator(bands: [MemoryBand]) -> any BufferAllocator {
        guard topology.numaAvailable else { return AlignedAllocator() }
        let nodes = Set(bands.map(\.node))
        return nodes.count == 1 ? NodeAllocator(node: nodes.first!) : BandedAllocator(bands: bands)
    }
    public func bindCurrentThread(toNode node: Int) {
        if topology.numaAvailable && topology.nodes.count > 1 { _ = numa_run_on_node(Int32(node)) }
    }
}

/// Memory on one NUMA node (page-aligned, so also 64-byte aligned).
public struct NodeAllocator: BufferAllocator {
    public let node: Int
    public func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        let size = max(bytes, 64)
        guard let p = numa_alloc_onnode(size, Int32(node)) else {
            fatalError("numa_alloc_onnode(\(size), \(node)) failed")
        }
        memset(p, 0, size)  // first touch, on the right node
        return p
    }
    public func deallocate(_ pointer: UnsafeMutableRawPointer, bytes: Int) { numa_free(pointer, max(bytes, 64)) }
    public var placement: String { "numa node \(node)" }
}

/// Memory interleaved page by page over a set of nodes.
public struct InterleavedAllocator: BufferAllocator {
    public let nodes: [Int]
    public func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        let size = max(bytes, 64)
        guard let mask = numa_allocate_nodemask() else { fatalError("numa_allocate_nodemask failed") }
        defer { numa_bitmask_free(mask) }
        for n in nodes { numa_bitmask_setbit(mask, UInt32(n)) }
        guard let p = numa_alloc_interleaved_subset(size, mask) else {
            fatalError("numa_alloc_interleaved_subset(\(size)) failed")
        }
        memset(p, 0, size)
        return p
    }
    public func deallocate(_ pointer: UnsafeMutableRawPointer, bytes: Int) { numa_free(pointer, max(bytes, 64)) }
    public var placement: String { "interleaved over nodes \(nodes.map(String.init).joined(separator: ","))" }
}

/// One buffer whose bands live on different nodes: mapped untouched (`numa_alloc`), each band's
/// pages bound to its node (`numa_tonode_memory`), then zeroed — the first touch, so every page
/// is placed by its band's policy.
public struct BandedAllocator: BufferAllocator {
    public let bands: [MemoryBand]
    public func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        let size = max(bytes, 64)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard let p = numa_alloc(size) else { fatalError("numa_alloc(\(size)) failed") }
        func pageUp(_ x: Int) -> Int { min(size, (x + page - 1) / page * page) }
        for band in bands {
            for r in band.ranges {
                // Pages whose first byte lies in the range.
                let lo = pageUp(r.byteOffset)
                let hi = pageUp(r.byteOffset + r.byteCount)
                if lo < hi { numa_tonode_memory(p + lo, hi - lo, Int32(band.node)) }
            }
        }
        memset(p, 0, size)
        return p
    }
    public func deallocate(_ pointer: UnsafeMutableRawPointer, bytes: Int) { numa_free(pointer, max(bytes, 64)) }
    /// The node each page of `pointer..<pointer+bytes` is on now (`move_pages` without moving),
    /// negative where a page is not resident; for tests and diagnostics.
    public static func nodesOfPages(_ pointer: UnsafeMutableRawPointer, bytes: Int) -> [Int] {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let count = (bytes + page - 1) / page
        var pages: [UnsafeMutableRawPointer?] = (0..<count).map { pointer + $0 * page }
        var status = [Int32](repeating: -1, count: count)
        guard numa_move_pages(0, UInt(count), &pages, nil, &status, 0) == 0 else { return [] }
        return status.map(Int.init)
    }
    public var placement: String { "bands on nodes \(bands.map { String($0.node) }.joined(separator: ","))" }
}
