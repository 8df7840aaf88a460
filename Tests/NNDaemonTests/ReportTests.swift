import Foundation
import XCTest

final class ReportTests: XCTestCase {
    /// nnctl report writes one self-contained HTML file; headless Chromium renders it to a
    /// non-blank PNG of the expected size.
    func testReportRendersInHeadlessChromium() throws {
        let browser = try XCTUnwrap(
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first {
                FileManager.default.isExecutableFile(atPath: $0)
            },
            "chromium missing: apt-get install chromium (.ci/run does)")
        let d = DaemonProcess()
        try d.start()
        let run = try d.createRun(smallSpec(name: "reported", trainLimit: 3000, epochs: 3))
        try d.waitFor(run, states: ["completed"])
        let html = "\(d.dir)/report.html"
        let png = "\(d.dir)/report.png"
        let (code, out, err) = try nnctl(["report", run, "-o", html], env: ["NND_SOCKET": d.socket])
        XCTAssertEqual(code, 0, out + err)
        let text = try String(contentsOfFile: html, encoding: .utf8)
        for needle in [
            "Cost and learning rate per epoch", "Confusion matrix", "Worst-classified", "<svg", "BLAS kernel",
            "batch_size",
        ] {
            XCTAssertTrue(text.contains(needle), "report lacks \(needle)")
        }
        for fetch in ["src=", "href=", "url(", "@import", "http://", "https://"] {
            XCTAssertFalse(text.contains(fetch), "report must be self-contained, found \(fetch)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: browser)
        p.arguments = [
            "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,2400",
            "--screenshot=\(png)", "file://\(html)",
        ]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        // Size from the PNG header; "non-blank" = enough non-white pixels (decoded with Python's zlib).
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: png)))
        func be32(_ o: Int) -> Int { bytes[o..<(o + 4)].reduce(0) { $0 << 8 | Int($1) } }
        XCTAssertEqual(Array(bytes[1...3]), Array("PNG".utf8))
        XCTAssertEqual(be32(16), 1200)
        XCTAssertEqual(be32(20), 2400)
        let script = """
            import sys, zlib, struct
            d = open(sys.argv[1], 'rb').read(); i = 8; idat = b''; w = h = 0
            while i < len(d):
                n, t = struct.unpack('>I4s', d[i:i+8])
                if t == b'IHDR': w, h, depth, ctype = struct.unpack('>IIBB', d[i+8:i+18])
                if t == b'IDAT': idat += d[i+8:i+8+n]
                i += 12 + n
            raw = zlib.decompress(idat)
            print(sum(1 for b in raw if b < 200) / len(raw))
            """
        let py = Process()
        py.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        py.arguments = ["python3", "-c", script, png]
        let pipe = Pipe()
        py.standardOutput = pipe
        try py.run()
        let dark =
            Double(
                String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(
                    in: .whitespacesAndNewlines)) ?? 0
        py.waitUntilExit()
        XCTAssertGreaterThan(dark, 0.01, "rendered page looks blank")
    }
}
