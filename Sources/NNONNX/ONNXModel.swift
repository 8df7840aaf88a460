import Foundation
import NNAPI
import NNCheckpoint
import SwiftProtobuf

/// A trained network as a standard ONNX graph (opset 13), for any ONNX runtime.
///
/// The graph is the network's forward pass as nnd computes it, one `Gemm` per layer:
///
///     input          [N, layers[0]]             float32, N free
///     theta_l        [layers[l], layers[l-1]]   initializer (the checkpoint's tensor, unchanged)
///     bias_l         [layers[l]]                initializer
///     gemm_l       = Gemm(a_{l-1}, theta_l, bias_l, transB = 1)   a_{l-1} · theta_lᵀ + bias_l
///     a_l          = Sigmoid | Tanh | Relu (gemm_l)               every hidden layer
///     probabilities = Softmax(gemm_L, axis = 1)                   [N, classes]
///
/// The message types are generated from ONNX's own `onnx.proto3` by swift-protobuf
/// (`Generated/`, see `scripts/generate-onnx.sh`); nothing here writes protobuf by hand.
public enum ONNXModel {
    /// The opset the graph is written against: Softmax with `axis = 1` over [N, classes] has
    /// meant "per record" since opset 13.
    public static let opset: Int64 = 13
    /// ONNX IR version 7 is the one that introduced opset 13; every runtime that reads
    /// opset 13 reads it.
    public static let irVersion: Int64 = 7

    /// The serialised `ModelProto` of `checkpoint`'s weights with `activation` on its hidden
    /// layers; `properties` describe where it came from (ONNX `metadata_props`: run, model, version).
    public static func encode(
        _ checkpoint: Checkpoint, activation: Activation, graphName: String, properties: [(String, String)]
    )
        throws -> [UInt8]
    {
        let layers = checkpoint.layers
        var graph = Onnx_GraphProto()
        graph.name = graphName
        graph.input = [tensorInfo("input", columns: layers[0])]
        graph.output = [tensorInfo("probabilities", columns: layers[layers.count - 1])]
        graph.initializer = checkpoint.layerTensors(from: checkpoint.parameters).map { tensor in
            var initializer = Onnx_TensorProto()
            initializer.name = tensor.name
            initializer.dims = tensor.shape.map(Int64.init)
            initializer.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
            // raw_data is little-endian by the format's definition, as this (x86-64) machine is.
            initializer.rawData = tensor.values.withUnsafeBytes { Data($0) }
            return initializer
        }
        var previous = "input"
        for l in 1..<layers.count {
            let gemm = "gemm_\(l)"
            var product = node("Gemm", name: gemm, inputs: [previous, "theta_\(l)", "bias_\(l)"], output: gemm)
            product.attribute = [intAttribute("transB", 1)]
            graph.node.append(product)
            if l < layers.count - 1 {
                let hidden = "a_\(l)"
                graph.node.append(node(activation.onnxOperator, name: hidden, inputs: [gemm], output: hidden))
                previous = hidden
            } else {
                var softmax = node("Softmax", name: "softmax", inputs: [gemm], output: "probabilities")
                softmax.attribute = [intAttribute("axis", 1)]
                graph.node.append(softmax)
            }
        }

        var model = Onnx_ModelProto()
        model.irVersion = irVersion
        model.producerName = "nnd"
        model.producerVersion = NNDVersion.current
        model.docString =
            "Network \(layers.map(String.init).joined(separator: "-")), \(activation.rawValue) hidden layers, "
            + "softmax output; input: float32 records scaled as in training."
        var opsetImport = Onnx_OperatorSetIdProto()
        opsetImport.domain = ""
        opsetImport.version = opset
        model.opsetImport = [opsetImport]
        model.metadataProps = properties.map { key, value in
            var entry = Onnx_StringStringEntryProto()
            entry.key = key
            entry.value = value
            return entry
        }
        model.graph = graph
        return Array(try model.serializedBytes() as Data)
    }

    /// A float32 tensor of shape [N, columns] with N named, so any batch size is accepted.
    private static func tensorInfo(_ name: String, columns: Int) -> Onnx_ValueInfoProto {
        var records = Onnx_TensorShapeProto.Dimension()
        records.dimParam = "N"
        var width = Onnx_TensorShapeProto.Dimension()
        width.dimValue = Int64(columns)
        var tensor = Onnx_TypeProto.Tensor()
        tensor.elemType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        tensor.shape.dim = [records, width]
        var info = Onnx_ValueInfoProto()
        info.name = name
        info.type.tensorType = tensor
        return info
    }

    private static func node(_ op: String, name: String, inputs: [String], output: String) -> Onnx_NodeProto {
        var node = Onnx_NodeProto()
        node.opType = op
        node.name = name
        node.input = inputs
        node.output = [output]
        return node
    }

    private static func intAttribute(_ name: String, _ value: Int64) -> Onnx_AttributeProto {
        var attribute = Onnx_AttributeProto()
        attribute.name = name
        attribute.type = .int
        attribute.i = value
        return attribute
    }
}

extension Activation {
    /// The ONNX operator computing this activation element-wise.
    var onnxOperator: String {
        switch self {
        case .logistic: "Sigmoid"
        case .tanh: "Tanh"
        case .relu: "Relu"
        }
    }
}
