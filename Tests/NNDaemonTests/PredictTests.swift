import Foundation
import NNAPI
import XCTest

/// Predictions from the current model: over HTTP for a single record, and through nnctl from
/// IDX, CSV and PNG files; every bad request is refused naming what is wrong.
final class PredictTests: XCTestCase {
    func testPredictionsFromTheCurrentModel() throws {
        let d = DaemonProcess()
        try d.start(args: ["--max-predict-rows", "50"])
        let env = ["NND_SOCKET": d.socket]
        let spec = "\(d.dir)/digits.yaml"
        try (smallSpec(name: "digits", trainLimit: 3000, epochs: 2) + "\npromotion: {model: digits}\n")
            .write(toFile: spec, atomically: true, encoding: .utf8)
        XCTAssertEqual(try nnctl(["retrain", spec], env: env).0, 0)
        let models = try APIJSON.decoder.decode(
            ModelList.self, from: Data(try d.client.request("GET", "/v1/models").body))
        let version = try XCTUnwrap(models.models.first?.versions.first)

        // nnctl on the IDX test files: the first 1,000 records (the spec's test_limit) give the
        // model's own test accuracy. Requests of 100 records each; the setting allows 50, so
        // nnctl must split: it sends 100 — refused — unless it keeps to the limit.
        let images = "\(sharedMNIST)/t10k-images-idx3-ubyte.gz"
        let labels = "\(sharedMNIST)/t10k-labels-idx1-ubyte.gz"
        let (code, out, err) = try nnctl(
            ["predict", "digits", images, "--labels", labels, "--limit", "1000"], env: env)
        XCTAssertEqual(code, 1, "100-record requests exceed max_predict_rows 50: \(out)\(err)")
        XCTAssertTrue(err.contains("at most 50 per request (max_predict_rows)"), err)
        _ = d.terminate()
        try d.start()
        let (pc, predicted, perr) = try nnctl(
            ["predict", "digits", images, "--labels", labels, "--limit", "1000"], env: env)
        XCTAssertEqual(pc, 0, perr)
        let lines = predicted.split(separator: "\n")
        XCTAssertEqual(lines.count, 1001)
        XCTAssertTrue(
            lines.last!.hasPrefix("accuracy \(String(format: "%.2f", version.testAccuracy))% ("), String(lines.last!))
        let first = lines[0].split(separator: " ")
        XCTAssertEqual(first.count, 2)

        // One record over HTTP: the same label as nnctl's first line.
        let pixels = try firstTestImage()
        let single = try d.client.request(
            "POST", "/v1/models/digits/predict",
            json: Array(try APIJSON.encoder.encode(PredictRequest(inputs: [pixels]))))
        XCTAssertEqual(single.status, 200, single.text)
        let answer = try APIJSON.decoder.decode(Prediction.self, from: Data(single.body))
        XCTAssertEqual(answer.version, version.version)
        XCTAssertEqual(answer.labels.count, 1)
        XCTAssertEqual(String(answer.labels[0]), String(first[0]))
        XCTAssertEqual(answer.probabilities[0].reduce(0, +), 1, accuracy: 1e-4)

        // The same record as CSV (label first, pixels 0-255) and as an 8-bit grayscale PNG.
        let raw = pixels.map { Int(($0 * 255).rounded()) }
        try
            ("label," + (0..<784).map { "p\($0)" }.joined(separator: ",") + "\n" + "7,"
            + raw.map(String.init).joined(separator: ",") + "\n")
            .write(toFile: "\(d.dir)/one.csv", atomically: true, encoding: .utf8)
        let (cc, csvOut, cerr) = try nnctl(["predict", "digits", "\(d.dir)/one.csv"], env: env)
        XCTAssertEqual(cc, 0, cerr)
        XCTAssertTrue(csvOut.hasPrefix("\(answer.labels[0]) "), csvOut)
        XCTAssertTrue(csvOut.contains("accuracy"), "labelled CSV rows give an accuracy: \(csvOut)")
        // Saved by a spreadsheet: a byte-order mark, no header. The record is read, not skipped.
        try Data([0xEF, 0xBB, 0xBF] + Array(("7," + raw.map(String.init).joined(separator: ",") + "\n").utf8))
            .write(to: URL(fileURLWithPath: "\(d.dir)/bom.csv"))
        let (bc, bomOut, berr) = try nnctl(["predict", "digits", "\(d.dir)/bom.csv"], env: env)
        XCTAssertEqual(bc, 0, berr)
        XCTAssertTrue(bomOut.hasPrefix("\(answer.labels[0]) "), bomOut)
        try writePNG(raw, to: "\(d.dir)/one.png")
        let (gc, pngOut, gerr) = try nnctl(["predict", "digits", "\(d.dir)/one.png", "--json"], env: env)
        XCTAssertEqual(gc, 0, gerr)
        XCTAssertEqual(try APIJSON.decoder.decode(Prediction.self, from: Data(pngOut.utf8)).labels, answer.labels)

        // Bad requests, each refused with a message naming the problem.
        func refused(_ path: String, _ body: String, _ status: Int, _ needle: String, line: UInt = #line) throws {
            let r = try d.client.request("POST", path, json: Array(body.utf8))
            XCTAssertEqual(r.status, status, r.text, line: line)
            let error = try APIJSON.decoder.decode(ErrorBody.self, from: Data(r.body)).error
            XCTAssertTrue(error.message.contains(needle), "'\(error.message)' lacks '\(needle)'", line: line)
        }
        try refused("/v1/models/digits/predict", #"{"inputs": [[1, 2]]}"#, 422, "inputs[0] has 2 values")
        try refused("/v1/models/digits/predict", #"{"inputs": []}"#, 422, "inputs is empty")
        try refused(
            "/v1/models/digits/predict",
            "{\"inputs\": [[\(Array(repeating: "0", count: 783).joined(separator: ",")), 1e300]]}",
            422, "inputs[0][783] is inf, not a finite number")
        try refused("/v1/models/digits/predict", #"{"inputs": "x"}"#, 422, "inputs must be")
        try refused("/v1/models/digits/predict", #"{"rows": []}"#, 422, "unknown field 'rows'")
        try refused("/v1/models/nope/predict", #"{"inputs": [[1]]}"#, 404, "no model named nope")
        try refused("/v1/models/digits/predict?version=v9", #"{"inputs": [[1]]}"#, 404, "has no version v9")
        try refused("/v1/models/digits/predict?version=..", #"{"inputs": [[1]]}"#, 422, "version must be")
        // Packed float32 (what nnctl sends): the same answer as JSON; a torn body is refused.
        var packed: [UInt8] = []
        for value in pixels { withUnsafeBytes(of: value.bitPattern.littleEndian) { packed += $0 } }
        let binary = try d.client.request(
            "POST", "/v1/models/digits/predict", body: packed, contentType: "application/octet-stream")
        XCTAssertEqual(binary.status, 200, binary.text)
        XCTAssertEqual(try APIJSON.decoder.decode(Prediction.self, from: Data(binary.body)).labels, answer.labels)
        let torn = try d.client.request(
            "POST", "/v1/models/digits/predict", body: Array(packed.dropLast(4)),
            contentType: "application/octet-stream")
        XCTAssertEqual(torn.status, 422)
        XCTAssertTrue(torn.text.contains("not a whole number of records of 784"), torn.text)
        let (lc, _, mismatch) = try nnctl(
            ["predict", "digits", images, "--labels", "\(sharedMNIST)/train-labels-idx1-ubyte.gz", "--limit", "10"],
            env: env)
        XCTAssertEqual(lc, 1, "the training set's labels do not go with the test images")
        XCTAssertTrue(mismatch.contains("train-labels-idx1-ubyte.gz: 60000 labels for 10000 records"), mismatch)
        let (wc, _, wrong) = try nnctl(["predict", "digits", "\(d.dir)/digits.yaml"], env: env)
        XCTAssertEqual(wc, 1)
        XCTAssertTrue(wrong.contains("digits.yaml: line 2: 6 fields, expected 784"), wrong)
        for (file, reason) in [("\(d.dir)/missing.gz", "No such file or directory"), (d.dir, "Is a directory")] {
            let (mc, _, missing) = try nnctl(["predict", "digits", file], env: env)
            XCTAssertEqual(mc, 1)
            XCTAssertEqual(missing, "nnctl: \(file): \(reason)\n")
            let (lc, _, noLabels) = try nnctl(["predict", "digits", images, "--labels", file], env: env)
            XCTAssertEqual(lc, 1)
            XCTAssertEqual(noLabels, "nnctl: \(file): \(reason)\n")
        }
        XCTAssertEqual(try d.get("/v1/health").0, 200)

        // What the model was trained on is recorded: in its info, its run and `nnd train --json`.
        XCTAssertEqual(version.trainRecords, 3000)
        let fingerprint = try XCTUnwrap(version.dataFingerprint)
        XCTAssertEqual(fingerprint.count, 64)
        let run = try APIJSON.decoder.decode(
            RunRecord.self, from: Data(try d.client.request("GET", "/v1/runs/\(version.run)").body))
        XCTAssertEqual(run.dataFingerprint, fingerprint)
        let (tc, result, terr) = try runBuilt("nnd", ["train", spec, "--data", sharedMNIST, "--epochs", "1", "--json"])
        XCTAssertEqual(tc, 0, terr)
        let last =
            try JSONSerialization.jsonObject(with: Data(result.split(separator: "\n").last!.utf8)) as! [String: Any]
        XCTAssertEqual(last["train_records"] as? Int, 3000)
        XCTAssertEqual(last["data_fingerprint"] as? String, fingerprint)
    }

    /// The first MNIST test image, scaled to [0, 1].
    func firstTestImage() throws -> [Float] {
        let images = try gunzip("\(sharedMNIST)/t10k-images-idx3-ubyte.gz")
        return images[16..<800].map { Float($0) / 255 }
    }

    /// A 28×28 8-bit grayscale PNG, written by Python's zlib (each scanline with filter 1, Sub).
    func writePNG(_ pixels: [Int], to path: String) throws {
        let script = """
            import struct, sys, zlib
            px = [int(v) for v in sys.argv[2].split(',')]
            rows = b''.join(bytes([1] + [(px[r*28+c] - (px[r*28+c-1] if c else 0)) % 256 for c in range(28)]) for r in range(28))
            def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
            png = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 28, 28, 8, 0, 0, 0, 0))
            png += chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b'')
            open(sys.argv[1], 'wb').write(png)
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script, path, pixels.map(String.init).joined(separator: ",")]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
    }
}
