// swift-tools-version:6.0
// nnd — a training daemon for the seed's MNIST network.
// Layers, one way only: executables → NNDaemon / NNControl → NNTraining / NNONNX → NNCheckpoint/NNEngine → NNData/NNNumerics → C libraries;
// NNAPI (the contract: specs, records, request and response bodies) is the leaf every layer may use.
import PackageDescription

// The numeric modules are compiled with optimisation even in debug builds, so `swift test`
// (debug) trains at a useful speed; everything else keeps debug checks.
let optimised: [SwiftSetting] = [.unsafeFlags(["-O"])]

let package = Package(
    name: "nnd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "nnd", targets: ["nnd"]),
        .executable(name: "nnctl", targets: ["nnctl"]),
        // For the fuzz package in Fuzz/, which builds it with -sanitize=fuzzer.
        .library(name: "NNFuzzing", targets: ["NNFuzzing"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // C libraries from Debian, wrapped as system-library targets.
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CNUMA", path: "Sources/CNUMA", providers: [.apt(["libnuma-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        // SHA-256 (datasets, checkpoints) from OpenSSL's libcrypto.
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(
            name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),

        // element-wise kernels in C: clang vectorises them, with an AVX2+FMA clone chosen at load time.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        // the git commit a binary was built from (written by make into commit.h), for `nnd info`.
        .target(name: "CBuildInfo"),
        // sets Swift concurrency's global enqueue hook where NIO's dlsym-based installer cannot
        // (the runtime linked in statically): the daemon's async code on its event loops.
        .target(name: "CExecutorHook"),
        // futex wait and wake for the engine's barriers (Swift cannot call the variadic syscall(2)).
        .target(name: "CFutex"),
        // the contract: run specs, run records, events, every request and response body, and the
        // one JSON configuration; shared by the daemon, the training layer and nnctl. Foundation only.
        .target(name: "NNAPI"),
        // whole-buffer gzip/zlib inflation (zlib), for the data readers and nnctl.
        .target(name: "NNInflate", dependencies: ["CZlib"]),
        // numerics: aligned buffers, BLAS with kernel selection, vector kernels, RNG, SHA-256.
        .target(
            name: "NNNumerics",
            dependencies: ["CBLAS", "CKernels", "COpenSSL"],
            swiftSettings: optimised),
        // data: IDX/CSV readers, dataset fetch and verification.
        .target(name: "NNData", dependencies: ["NNNumerics", "NNInflate", "CZlib"], swiftSettings: optimised),
        // parallel engine: flat parameters, forward/backward, data-parallel step, NUMA placement, optimisers.
        .target(
            name: "NNEngine", dependencies: ["NNAPI", "NNNumerics", "NNData", "CNUMA", "CKernels", "CFutex"],
            swiftSettings: optimised),
        // across processes: the engine's gradient reducer on Open MPI (MPI_Allreduce).
        .target(name: "NNDistributed", dependencies: ["CMPI", "NNEngine"]),
        // checkpoints: safetensors + resume state, atomic writes, retention.
        .target(name: "NNCheckpoint", dependencies: ["CZlib", "NNAPI", "NNEngine", "NNNumerics"]),
        // ONNX export: the network as a standard ONNX graph; message types generated from onnx.proto3.
        .target(
            name: "NNONNX",
            dependencies: ["NNAPI", "NNCheckpoint", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            exclude: ["Generated/onnx.proto3"]),
        // training: run specs (YAML), the epoch loop the daemon drives, evaluation, benchmark.
        .target(
            name: "NNTraining",
            dependencies: [
                "NNAPI", "NNEngine", "NNData", "NNCheckpoint",
                .product(name: "Yams", package: "Yams"),
            ]),
        // daemon: RunManager and the HTTP/JSON control API on a Unix socket.
        .target(
            name: "NNDaemon",
            dependencies: [
                "NNAPI", "NNControl", "NNTraining", "NNONNX", "CExecutorHook",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        // fuzzing: what the libFuzzer harness (Fuzz/) and the regression tests feed the file readers.
        .target(name: "NNFuzzing", dependencies: ["NNAPI", "NNData", "NNCheckpoint", "NNEngine"]),
        // control client: HTTP/1.1 over a Unix socket, used by nnctl.
        .target(name: "NNControl", dependencies: []),

        .executableTarget(
            name: "nnd",
            dependencies: [
                "NNDaemon", "NNTraining", "NNCheckpoint", "NNDistributed", "CBuildInfo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "nnctl",
            dependencies: [
                "NNAPI", "NNControl", "NNInflate",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        .testTarget(name: "NNNumericsTests", dependencies: ["NNNumerics", "CKernels"]),
        .testTarget(name: "NNDataTests", dependencies: ["NNData", "NNFuzzing"]),
        .testTarget(name: "NNEngineTests", dependencies: ["NNAPI", "NNEngine", "NNData", "CKernels"]),
        .testTarget(name: "NNTrainingTests", dependencies: ["NNAPI", "NNTraining"]),
        .testTarget(
            name: "NNDaemonTests",
            dependencies: [
                "NNAPI", "NNControl", "NNCheckpoint", "NNInflate", "NNEngine", "NNNumerics", "NNDistributed",
                "NNDaemon",
            ]),
    ]
)
