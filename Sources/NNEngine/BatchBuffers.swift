import NNNumerics

/// The mini-batch's activations and deltas: per layer one row-major matrix with the records of
/// every shard one after another (shard s starts at the step's row `c·s/W`). Keeping the
/// shards' rows adjacent is what lets the weight gradient of the whole batch be one GEMM per
/// layer and slice, whose inner sum runs over every shard's records — the reduction over
/// workers happens inside that sum instead of in a pass over per-worker gradient copies.
///
/// One allocation; worker w's nominal rows `[w·maxRows, (w+1)·maxRows)` of every matrix are
/// a band bound to w's NUMA node (see `MemoryPlacer`), so each worker's forward and backward
/// write memory on its own node; so is worker w's first-layer block, where it computes its
/// slice of the first layer's units (`blockFloats` floats). Allocated once, before the first step.
final class BatchBuffers {
    let memory: FloatBuffer
    /// activations[l]: rows × sizes[l] (l = 0 is the gathered input)
    let activations: [UnsafeMutablePointer<Float>]
    /// deltas[l]: rows × sizes[l] for l ≥ 1 (index 0 unused, points at activations[0])
    let deltas: [UnsafeMutablePointer<Float>]
    /// firstLayerBlocks[w]: worker w's rows × (its units) of the first layer, before they are
    /// copied into activations[1].
    let firstLayerBlocks: [UnsafeMutablePointer<Float>]

    /// Float offsets of the matrices and then of the workers' blocks inside `memory`, and each
    /// worker's band of bytes in them.
    static func plan(sizes: [Int], workers: Int, maxRows: Int, blockFloats: Int = 0)
        -> (offsets: [Int], blockOffsets: [Int], total: Int, bands: [[MemoryBand.Range]])
    {
        func align(_ x: Int) -> Int { (x + 15) / 16 * 16 }
        var offsets: [Int] = []
        var total = 0
        for s in sizes + sizes {
            offsets.append(total)
            total += align(workers * maxRows * s)
        }
        var blockOffsets: [Int] = []
        for _ in 0..<workers {
            blockOffsets.append(total)
            total += align(blockFloats)
        }
        let f = MemoryLayout<Float>.stride
        let bands = (0..<workers).map { w in
            zip(offsets, sizes + sizes).map { off, s in
                MemoryBand.Range(byteOffset: (off + w * maxRows * s) * f, byteCount: maxRows * s * f)
            }
                + (blockFloats > 0
                    ? [MemoryBand.Range(byteOffset: blockOffsets[w] * f, byteCount: blockFloats * f)] : [])
        }
        return (offsets, blockOffsets, total, bands)
    }

    init(
        sizes: [Int], workers: Int, maxRows: Int, blockFloats: Int, placements: [WorkerPlacement],
        placer: any MemoryPlacer
    ) {
        let plan = Self.plan(sizes: sizes, workers: workers, maxRows: maxRows, blockFloats: blockFloats)
        let bands = placements.map { p in MemoryBand(node: p.node, ranges: plan.bands[p.worker]) }
        let memory = FloatBuffer(count: plan.total, allocator: placer.allocator(bands: bands))
        self.memory = memory
        activations = plan.offsets[0..<sizes.count].map { memory.pointer + $0 }
        deltas = plan.offsets[sizes.count...].map { memory.pointer + $0 }
        firstLayerBlocks = plan.blockOffsets.map { memory.pointer + $0 }
    }
}
