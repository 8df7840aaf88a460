import Foundation
import NNAPI
import NNControl
import XCTest

/// Hostile input against a real daemon: generated and mutated requests. Every one gets a
/// 2xx/4xx answer (never a 5xx, never a crash or hang), and nothing is written outside the
/// state directory. `NND_FUZZ_REQUESTS` sets the count (CI: 2000; README reports 10,000).
final class APIFuzzTests: XCTestCase {
    func testGeneratedAndMutatedRequests() throws {
        let count = Int(ProcessInfo.processInfo.environment["NND_FUZZ_REQUESTS"] ?? "") ?? 2000
        let d = DaemonProcess()
        try d.start(args: ["--max-concurrent-runs", "1"])
        let base =
            "{\"spec\": {\"name\": \"fz\", \"training\": {\"epochs\": 1, \"batch_size\": 16}, \"data\": {\"train_limit\": 64, \"test_limit\": 64}, \"model\": {\"layers\": [784, 8, 10]}}}"
        var rng = SystemRandomNumberGenerator()
        func randomBytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) } }
        let hostileNames = [
            "../../etc/passwd", "/etc/passwd", "a\u{0}b", "..", ".hidden", String(repeating: "x", count: 5000), "名前",
            "a/b", "%2e%2e%2f",
        ]
        let hostileValues: [String] = [
            "1e308", "-1", "1180591620717411303424", "null", "true", "\"str\"", "[]", "{}", "NaN", "-0", "0.0000001",
            String(repeating: "[", count: 20000) + String(repeating: "]", count: 20000),
            "\"" + String(repeating: "y", count: 200_000) + "\"",
        ]
        var statuses: [Int: Int] = [:]
        var dropped = 0
        for i in 0..<count {
            var method = "POST"
            var path = "/v1/runs"
            var body: [UInt8]? = nil
            switch i % 10 {
            case 0: body = randomBytes(Int.random(in: 0...300, using: &rng))
            case 1:  // bit-flipped valid request
                var b = Array(base.utf8)
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    b[Int.random(in: 0..<b.count, using: &rng)] ^= UInt8(1 << Int.random(in: 0...7, using: &rng))
                }
                body = b
            case 2:  // a field set to a hostile value
                let fields = [
                    "training.epochs", "training.batch_size", "training.learning_rate", "model.layers",
                    "data.train_limit", "name", "checkpoint.keep",
                ]
                let f = fields.randomElement(using: &rng)!
                let v = hostileValues.randomElement(using: &rng)!
                body = Array(
                    "{\"spec_yaml\": \"name: fz\\ntraining: {epochs: 1}\\ndata: {train_limit: 64, test_limit: 64}\", \"overrides\": [\"\(f)=\(v.prefix(300_000))\"]}"
                        .utf8)
            case 3:  // hostile names
                let n = hostileNames.randomElement(using: &rng)!
                body = Array(
                    "{\"name\": \(String(decoding: try JSONEncoder().encode(n), as: UTF8.self)), \"spec\": {\"training\": {\"epochs\": 1}, \"data\": {\"train_limit\": 64, \"test_limit\": 64}}}"
                        .utf8)
            case 4:
                body =
                    Array("{\"spec\": ".utf8) + Array(hostileValues.randomElement(using: &rng)!.utf8) + Array("}".utf8)
            case 5:
                body =
                    Array("{\"spec_yaml\": \"".utf8) + randomBytes(200).filter { $0 != 0x22 && $0 != 0x5C }
                    + Array("\"}".utf8)  // invalid UTF-8 inside JSON
            case 6:
                method = ["GET", "POST", "PUT", "DELETE", "PATCH"].randomElement(using: &rng)!
                path =
                    "/v1/runs/"
                    + (hostileNames.randomElement(using: &rng)!.addingPercentEncoding(
                        withAllowedCharacters: .urlPathAllowed) ?? "x") + [
                        "", "/pause", "/resume", "/stop", "/eval", "/export?format=../x", "/report",
                    ].randomElement(using: &rng)!
            case 7 where Bool.random(using: &rng):
                method = "POST"
                path = "/v1/models/" + ["../x", "x", "%00", ".."].randomElement(using: &rng)! + "/promote"
                body = Array("{\"version\": \"../../etc\"}".utf8)
                if Bool.random(using: &rng) {  // exports: hostile models, formats and versions
                    method = "GET"
                    body = nil
                    path =
                        "/v1/models/" + ["digits", "../x", "%00", "x"].randomElement(using: &rng)! + "/export"
                        + ["", "?format=onnx", "?format=../x", "?format=onnx&version=../../etc", "?version=%00"]
                        .randomElement(using: &rng)!
                }
            case 7:  // predictions: hostile models, versions and inputs
                method = "POST"
                path =
                    "/v1/models/" + ["digits", "../x", "%00", "x"].randomElement(using: &rng)! + "/predict"
                    + ["", "?version=../../etc", "?version=%00", "?version=x"].randomElement(using: &rng)!
                let value = hostileValues.randomElement(using: &rng)!.prefix(300_000)
                body = Array(
                    ["{\"inputs\": \(value)}", "{\"inputs\": [[\(value)]]}", "{\"inputs\": [\(value)]}"]
                        .randomElement(using: &rng)!.utf8)
            case 8:
                body = Array(
                    "{\"spec\": \(String(repeating: "{\"a\":", count: 5000))1\(String(repeating: "}", count: 5000))}"
                        .utf8)
            default:
                body = [UInt8](repeating: UInt8(ascii: "a"), count: Int.random(in: 1_000_000...1_200_000, using: &rng))
            }
            do {
                let r = try d.client.request(method, path, json: body)
                statuses[r.status, default: 0] += 1
                XCTAssertLessThan(
                    r.status, 500,
                    "\(method) \(path) body \(String(decoding: (body ?? []).prefix(200), as: UTF8.self)) → \(r.status) \(r.text.prefix(300))"
                )
                if r.status >= 500 { break }
            } catch {
                dropped += 1  // the daemon may close on a malformed request line; it must keep serving
            }
            if i % 200 == 0 {
                XCTAssertEqual(try d.get("/v1/health").0, 200, "daemon stopped serving after request \(i)")
            }
        }
        XCTAssertEqual(try d.get("/v1/health").0, 200)
        XCTAssertNotNil(d.process?.isRunning == true ? true : nil, "daemon died")
        // Nothing outside the state directory: the test dir holds only the socket, the log and state/.
        let top = Set(try FileManager.default.contentsOfDirectory(atPath: d.dir))
        XCTAssertTrue(top.isSubset(of: ["nnd.sock", "nnd.log", "state"]), "\(top)")
        let state = Set(try FileManager.default.contentsOfDirectory(atPath: d.stateDir))
        XCTAssertTrue(state.isSubset(of: ["runs", "models", "nnd.lock"]), "\(state)")
        for run in try FileManager.default.contentsOfDirectory(atPath: "\(d.stateDir)/runs") {
            XCTAssertFalse(run.contains("/") || run.hasPrefix("."), run)
        }
        print(
            "api fuzz: \(count) requests, statuses \(statuses.sorted { $0.key < $1.key }), \(dropped) dropped by the daemon, 0 crashes"
        )
    }

    /// A client that sends its request a byte at a time does not hold up others.
    func testSlowClientDoesNotBlockOthers() throws {
        let d = DaemonProcess()
        try d.start()
        let fd = try d.client.connectSocket()
        defer { close(fd) }
        let partial = Array("GET /v1/hea".utf8)
        for b in partial {
            _ = [b].withUnsafeBytes { send(fd, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
            let t0 = Date()
            XCTAssertEqual(try d.get("/v1/health").0, 200)
            XCTAssertLessThan(Date().timeIntervalSince(t0), 1)
            usleep(100_000)
        }
    }

    /// Slow-loris: a client trickling its request head, or its body, a byte every half second
    /// is cut off after `request_timeout_seconds` (2 s here; 30 by default) — the head by
    /// closing the connection, the body with 408 — while other clients are served throughout.
    func testTricklingClientsAreCutOffAfterTheRequestTimeout() throws {
        let d = DaemonProcess(extraEnv: ["NND_REQUEST_TIMEOUT_SECONDS": "2"])
        try d.start()
        /// Sends `prefix` at once, then `trickle` a byte every 0.5 s, reading whatever comes
        /// back; returns what the daemon sent and when it closed (nil: still open at the end).
        func trickle(prefix: String, _ trickle: String, seconds: Double) throws -> (reply: String, closedAfter: Double?)
        {
            let fd = try d.client.connectSocket()
            defer { close(fd) }
            var tv = timeval(tv_sec: 0, tv_usec: 1000)  // poll the reply while trickling
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let t0 = Date()
            var reply = [UInt8]()
            var buf = [UInt8](repeating: 0, count: 4096)
            _ = Array(prefix.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            var pending = Array(trickle.utf8)[...]
            var nextByte = Date()
            while Date().timeIntervalSince(t0) < seconds {
                if Date() >= nextByte, let b = pending.popFirst() {
                    if [b].withUnsafeBytes({ send(fd, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }) < 0 {
                        return (String(decoding: reply, as: UTF8.self), Date().timeIntervalSince(t0))
                    }
                    nextByte = Date().addingTimeInterval(0.5)
                }
                let n = recv(fd, &buf, buf.count, 0)
                if n == 0 { return (String(decoding: reply, as: UTF8.self), Date().timeIntervalSince(t0)) }
                if n > 0 { reply += buf[0..<n] }
                // Others are served while this client trickles.
                XCTAssertEqual(try? d.get("/v1/health").0, 200)
                usleep(50_000)
            }
            return (String(decoding: reply, as: UTF8.self), nil)
        }
        let head = try trickle(
            prefix: "", "GET /v1/health HTTP/1.1\r\nHost: nnd\r\nX-Padding: aaaaaaaaaaaaaaaaaaaa\r\n\r\n", seconds: 8)
        XCTAssertNotNil(head.closedAfter, "a trickled request head kept its connection for 8 s")
        XCTAssertGreaterThan(head.closedAfter ?? 0, 1.5)
        XCTAssertLessThan(head.closedAfter ?? 99, 5)
        XCTAssertFalse(head.reply.contains("200 OK"), head.reply)

        let body = try trickle(
            prefix:
                "POST /v1/runs HTTP/1.1\r\nHost: nnd\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n",
            String(repeating: " ", count: 200), seconds: 8)
        XCTAssertTrue(body.reply.hasPrefix("HTTP/1.1 408"), body.reply)
        XCTAssertTrue(body.reply.contains("request_timeout_seconds"), body.reply)
        XCTAssertNotNil(body.closedAfter, "the connection stayed open after 408")
        XCTAssertLessThan(body.closedAfter ?? 99, 5)
        XCTAssertEqual(try d.get("/v1/health").0, 200)
        print(
            "slow-loris: trickled head cut off after \(String(format: "%.1f", head.closedAfter ?? -1)) s, trickled body answered 408 and closed after \(String(format: "%.1f", body.closedAfter ?? -1)) s (timeout 2 s)"
        )
    }

    /// A request that is not valid HTTP/1.1 gets the API's JSON error naming the fault (431 for a
    /// head over 80 KiB), also after a valid request on the same connection, and the connection
    /// is closed; the daemon serves on. Before, NIO's parser errors got an empty 400.
    func testMalformedHTTPIsAnsweredWithAJSONErrorNamingTheFault() throws {
        let d = DaemonProcess()
        try d.start()
        /// Sends `raw` on a new connection and reads until the daemon closes it (or 5 s pass).
        func exchange(_ raw: [UInt8]) throws -> (reply: String, closed: Bool) {
            let fd = try d.client.connectSocket()
            defer { close(fd) }
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            _ = raw.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            var reply = [UInt8]()
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = recv(fd, &buf, buf.count, 0)
                if n == 0 { return (String(decoding: reply, as: UTF8.self), true) }
                if n < 0 { return (String(decoding: reply, as: UTF8.self), errno == ECONNRESET) }
                reply += buf[0..<n]
            }
        }
        /// The JSON error at the end of `reply` (the last response on the connection).
        func error(in reply: String) throws -> APIError {
            let json = try XCTUnwrap(reply.range(of: "\r\n\r\n{", options: .backwards), reply)
            return try APIJSON.decoder.decode(
                ErrorBody.self, from: Data(reply[reply.index(before: json.upperBound)...].utf8)
            ).error
        }
        let cases: [(request: String, status: Int, code: String, says: String)] = [
            ("BREW /v1/health HTTP/1.1\r\nHost: nnd\r\n\r\n", 400, "malformed_request", "method is not an HTTP method"),
            (
                "GET /v1/health HTTP/1.1\r\nHost: nnd\r\nBad Header: y\r\n\r\n", 400, "malformed_request",
                "header line is not `Name: value`"
            ),
            (
                "POST /v1/runs HTTP/1.1\r\nHost: nnd\r\nContent-Length: ten\r\n\r\n", 400, "malformed_request",
                "Content-Length"
            ),
            (
                "GET /v1/health HTTP/1.1\r\nHost: nnd\r\nX-Big: \(String(repeating: "a", count: 100_000))\r\n\r\n", 431,
                "request_head_too_large", "over 80 KiB"
            ),
        ]
        for c in cases {
            let (reply, closed) = try exchange(Array(c.request.utf8))
            XCTAssertTrue(reply.hasPrefix("HTTP/1.1 \(c.status) "), reply)
            XCTAssertTrue(reply.contains("Content-Type: application/json"), reply)
            let e = try error(in: reply)
            XCTAssertEqual(e.status, c.status)
            XCTAssertEqual(e.code, c.code)
            XCTAssertTrue(e.message.contains(c.says), e.message)
            XCTAssertTrue(closed, "the connection stayed open after \(c.code)")
        }
        // After a valid request on the same connection: its answer first, then the error.
        let (reply, closed) = try exchange(
            Array("GET /v1/health HTTP/1.1\r\nHost: nnd\r\n\r\nBREW /v1/health HTTP/1.1\r\nHost: nnd\r\n\r\n".utf8))
        XCTAssertTrue(reply.hasPrefix("HTTP/1.1 200 OK"), reply)
        XCTAssertEqual(try error(in: reply).code, "malformed_request", reply)
        XCTAssertTrue(closed)
        XCTAssertEqual(try d.get("/v1/health").0, 200)
    }
}
