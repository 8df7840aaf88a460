import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NNAPI

/// Answers a request that is not valid HTTP/1.1 with the API's JSON error, naming what is wrong,
/// instead of the empty `400 Bad Request` Hummingbird writes for any parser error.
///
/// NIO's HTTP decoder reports a malformed request head (a line without CRLF, a space in a header
/// name, a bad Content-Length, a head over `maxRequestHeadBytes`) as an `HTTPParserError` through
/// the pipeline and stops decoding; no handler of ours ever sees the request. This handler sits
/// between the HTTP codec and Hummingbird's request loop (`additionalChannelHandlers`, a new
/// instance per connection), turns that error into `{"error": {…}}` and closes the connection,
/// as the decoder cannot find where the next request would begin. A malformed request that
/// follows others on the same connection is answered after their responses, so that responses
/// are never interleaved; a fault inside a request's body is left to that request's handler
/// (Hummingbird's answer), which owns the response.
final class MalformedRequestResponder: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// NIO's limit on a request's header fields (HTTP1Channel's default, which the daemon keeps).
    static let maxRequestHeadBytes = 80 * 1024

    /// Requests whose head arrived and whose response has not ended yet.
    private var unansweredRequests = 0
    /// Whether a request's head arrived and its end has not (its body is being read).
    private var requestInProgress = false
    /// A malformed request's answer, waiting for the responses to the requests before it.
    private var pendingAnswer: APIError?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            unansweredRequests += 1
            requestInProgress = true
        case .end: requestInProgress = false
        case .body: break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else { return context.write(data, promise: promise) }
        context.write(data, promise: promise)
        unansweredRequests = max(0, unansweredRequests - 1)
        if unansweredRequests == 0, let answer = pendingAnswer {
            pendingAnswer = nil
            respond(context: context, with: answer)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError, !requestInProgress else {
            context.fireErrorCaught(error)
            return
        }
        if unansweredRequests == 0 {
            respond(context: context, with: Self.apiError(for: parserError))
        } else {
            pendingAnswer = Self.apiError(for: parserError)
        }
    }

    /// Writes `apiError` as the API's JSON error and closes the connection.
    private func respond(context: ChannelHandlerContext, with apiError: APIError) {
        let body = (try? APIJSON.line(ErrorBody(error: apiError))) ?? Data("{}\n".utf8)
        var head = HTTPResponse(status: .init(code: apiError.status))
        head.headerFields[.contentType] = "application/json"
        head.headerFields[.contentLength] = "\(body.count)"
        head.headerFields[.connection] = "close"
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(context.channel.allocator.buffer(bytes: body))), promise: nil)
        let channel = context.channel  // Sendable, unlike the context the completion would capture
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    /// The API error for a parser error: 431 for a head over the limit, 400 naming the fault
    /// otherwise (NIO's own name for it in brackets, for searching its sources).
    static func apiError(for error: HTTPParserError) -> APIError {
        let what: String
        switch error {
        case .headerOverflow:
            return APIError(
                431, "request_head_too_large",
                "the request's header fields are over \(maxRequestHeadBytes / 1024) KiB, the most nnd reads; "
                    + "send large values in the JSON body")
        case .invalidMethod: what = "the request line's method is not an HTTP method (GET, POST, DELETE, …)"
        case .invalidURL, .invalidPath, .invalidQueryString, .invalidFragment, .invalidHost, .invalidPort:
            what = "the request line's target is not a valid path (spaces and control characters must be %-encoded)"
        case .invalidVersion: what = "the request line does not end in HTTP/1.0 or HTTP/1.1"
        case .invalidHeaderToken:
            what = "a header line is not `Name: value` (a header name cannot contain spaces or separators)"
        case .invalidContentLength, .unexpectedContentLength:
            what = "the Content-Length header is not a single number, or is sent with Transfer-Encoding"
        case .invalidChunkSize: what = "a chunk of the chunked body has no valid hexadecimal size line"
        case .lfExpected, .invalidConstant, .strictModeAssertion, .invalidCharactersUsed:
            what = "the request is not HTTP/1.1: each line must end in CRLF and contain no control characters"
        default: what = "the request is not valid HTTP/1.1"
        }
        return APIError(400, "malformed_request", "\(what) [\(error)]; the connection is closed")
    }
}
