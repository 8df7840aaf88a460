import Hummingbird
import NNAPI
import NNCheckpoint
import NNONNX

/// What the run and model export routes share: the `?format=` parameter, the ONNX encoding
/// and the download response.
enum ExportFile {
    static func format(of request: Request) throws(APIError) -> ExportFormat {
        let requested = request.uri.queryParameters.get("format") ?? ExportFormat.safetensors.rawValue
        guard let format = ExportFormat(rawValue: requested) else {
            let allowed = ExportFormat.allCases.map(\.rawValue).joined(separator: ", ")
            throw APIError(
                422, "invalid_value", "format must be one of \(allowed), got '\(requested.prefix(40))'",
                field: "format")
        }
        return format
    }

    static func onnx(_ checkpoint: Checkpoint, activation: Activation, name: String, properties: [(String, String)])
        throws(APIError) -> [UInt8]
    {
        do {
            return try ONNXModel.encode(checkpoint, activation: activation, graphName: name, properties: properties)
        } catch {
            throw APIError(500, "internal", "cannot encode \(name) as ONNX: \(error)")
        }
    }

    /// The file as a download named `filename`.
    static func response(_ bytes: [UInt8], filename: String) -> Response {
        var disposition = HTTPFields()
        disposition[.contentDisposition] = "attachment; filename=\"\(filename)\""
        return .bytes(bytes, contentType: "application/octet-stream", extraHeaders: disposition)
    }
}
