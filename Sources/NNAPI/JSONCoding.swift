import Foundation

/// The one JSON configuration of nnd: the HTTP API, `run.json`, `info.json`, `nnd train --json`
/// and nnctl all use it. Swift names are camelCase; on the wire they are snake_case.
///
/// Types in this module spell their keys in camelCase only (a `CodingKeys` raw value, when a
/// key is renamed, is camelCase too): `convertFromSnakeCase` turns `batch_size` into
/// `batchSize` before it looks the key up, so a snake_case raw value would never match.
/// Reading camelCase keys is unaffected, which is how files written before this
/// configuration (camelCase) still load.
public enum APIJSON {
    public static let encoder: JSONEncoder = makeEncoder()
    public static let prettyEncoder: JSONEncoder = makeEncoder(pretty: true)
    public static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.dateDecodingStrategy = .iso8601
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }()

    static func makeEncoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted] : [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }

    /// `value` encoded, followed by a newline (every JSON body and NDJSON line ends in one).
    public static func line<T: Encodable>(_ value: T) throws -> Data {
        var data = try encoder.encode(value)
        data.append(0x0A)
        return data
    }

    /// The wire name of a Swift property name: `batchSize` → `batch_size` (for messages that
    /// name a field as the user wrote it).
    public static func snakeCase(_ name: String) -> String {
        var out = ""
        for (index, character) in name.enumerated() {
            if character.isUppercase {
                if index > 0 { out.append("_") }
                out.append(contentsOf: character.lowercased())
            } else {
                out.append(character)
            }
        }
        return out
    }
}
