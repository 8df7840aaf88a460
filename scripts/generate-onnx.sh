#!/usr/bin/env bash
# Regenerates Sources/NNONNX/Generated/onnx.pb.swift from the onnx.proto3 committed beside it.
# Run by hand when onnx.proto3 changes; the generated file is committed, so builds never run
# the plugin (its first build takes minutes).
#
# onnx.proto3 comes from ONNX itself: pip install onnx; then
#   python3 "$(python3 -c 'import onnx, os; print(os.path.dirname(onnx.__file__))')/gen_proto.py" -o /tmp/onnx onnx
# writes /tmp/onnx/onnx.proto3 (ONNX's proto2 file with the `optional`s removed).
#
# Needs protoc (apt install protobuf-compiler) and protoc-gen-swift of the swift-protobuf
# version Package.swift names (swift build -c release --product protoc-gen-swift in a clone).
set -euo pipefail
cd "$(dirname "$0")/../Sources/NNONNX/Generated"
plugin=${PROTOC_GEN_SWIFT:-$(command -v protoc-gen-swift)}
protoc --plugin=protoc-gen-swift="$plugin" --swift_out=. --swift_opt=Visibility=Public onnx.proto3
# (The generated file starts with `// swift-format-ignore-file`: make lint leaves it alone.)
echo "wrote $(pwd)/onnx.pb.swift"
