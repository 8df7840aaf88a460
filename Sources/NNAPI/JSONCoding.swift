#if canImport(FoundationEssentials)
    // Foundation's essentials only (no ICU, no networking): nnctl, which links this, stays small.
    import FoundationEssentials
#else
    import Foundation
#endif

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
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = parseDate(text) else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "'\(text)' is not an ISO 8601 date")
            }
            return date
        }
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }()

    static func makeEncoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(formatDate(date))
        }
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted] : [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }

    /// Dates are ISO 8601 in UTC with milliseconds (`2026-11-30T02:11:23.042Z`): runs created or
    /// finished within one second still sort in the order they happened (retention keeps the
    /// newest). Dates without a fraction (files written before) are read too.
    public static func formatDate(_ date: Date) -> String {
        date.formatted(withMilliseconds)
    }

    public static func parseDate(_ text: String) -> Date? {
        (try? withMilliseconds.parse(text)) ?? (try? Date.ISO8601FormatStyle().parse(text))
    }

    private static let withMilliseconds = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

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
