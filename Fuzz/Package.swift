// swift-tools-version:6.0
// The libFuzzer harness for nnd's file readers. A package of its own, so that the main
// package's `swift build` never links it (it needs the fuzzer runtime).
// Built and run by `make fuzz` (scripts/fuzz.sh):
//   swift build -c release -Xswiftc -sanitize=fuzzer,address
import PackageDescription

let package = Package(
    name: "nnd-fuzz",
    dependencies: [.package(name: "nnd", path: "..")],
    targets: [
        .target(name: "CFuzzerDriver"),
        .executableTarget(
            name: "nnd-fuzz", dependencies: ["CFuzzerDriver", .product(name: "NNFuzzing", package: "nnd")]),
    ]
)
