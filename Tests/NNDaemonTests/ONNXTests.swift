import Foundation
import NNAPI
import XCTest

/// ONNX exports, through nnctl, of logistic, tanh and ReLU networks: each passes
/// `onnx.checker` and, run by `onnxruntime` (scripts/onnx_predict.py, the way a user's own
/// service would run it), reproduces nnd's own probabilities to 1e-5 and its test accuracy.
final class ONNXTests: XCTestCase {
    struct Scored: Decodable {
        let labels: [Int]
        let probabilities: [[Double]]
        let accuracy: Double?
    }

    struct Written: Decodable {
        let output: String
        let bytes: Int
        let format: String?
    }

    let images = "\(sharedMNIST)/t10k-images-idx3-ubyte.gz"
    let labels = "\(sharedMNIST)/t10k-labels-idx1-ubyte.gz"

    /// onnxruntime's answers for the first `limit` test images.
    func onnxruntime(_ model: String, limit: Int) throws -> Scored {
        let (code, out, err) = try runProgram(
            "/usr/bin/env",
            [
                "python3", "\(repoRoot)/scripts/onnx_predict.py", model, images, "--labels", labels, "--limit",
                "\(limit)",
                "--json",
            ])
        XCTAssertEqual(code, 0, "onnx_predict.py \(model): \(err)")
        return try JSONDecoder().decode(Scored.self, from: Data(out.utf8))
    }

    func testExportsPassTheCheckerAndReproduceNNDInOnnxruntime() throws {
        let d = DaemonProcess()
        try d.start()
        let env = ["NND_SOCKET": d.socket]
        for (activation, initialisation) in [("logistic", "xavier"), ("tanh", "xavier"), ("relu", "he")] {
            let name = "digits-\(activation)"
            let spec = "\(d.dir)/\(name).yaml"
            try
                (smallSpec(name: name, trainLimit: 2000, epochs: 1)
                .replacingOccurrences(
                    of: "activation: relu, init: he", with: "activation: \(activation), init: \(initialisation)")
                + "\npromotion: {model: \(name)}\n")
                .write(toFile: spec, atomically: true, encoding: .utf8)
            XCTAssertEqual(try nnctl(["retrain", spec], env: env).0, 0, name)

            // The model's current version, with --json: where it went and how big it is.
            let modelFile = "\(d.dir)/\(name).onnx"
            let (mc, mout, merr) = try nnctl(
                ["export", "--model", name, "--format", "onnx", "-o", modelFile, "--json"], env: env)
            XCTAssertEqual(mc, 0, merr)
            let written = try JSONDecoder().decode(Written.self, from: Data(mout.utf8))
            XCTAssertEqual(written.output, modelFile)
            XCTAssertEqual(written.format, "onnx")
            let size = try FileManager.default.attributesOfItem(atPath: modelFile)[.size] as? Int
            XCTAssertEqual(written.bytes, size)

            // nnd's own probabilities for the same 1,000 records.
            let (pc, pout, perr) = try nnctl(
                ["predict", name, images, "--limit", "1000", "--feature-scale", "255", "--json"], env: env)
            XCTAssertEqual(pc, 0, perr)
            let own = try APIJSON.decoder.decode(Prediction.self, from: Data(pout.utf8))
            let onnx = try onnxruntime(modelFile, limit: 1000)
            XCTAssertEqual(onnx.labels.count, 1000)
            XCTAssertEqual(zip(onnx.labels, own.labels).filter { $0 != $1 }.count, 0, "\(name): labels that differ")
            var largest = 0.0
            for (a, b) in zip(onnx.probabilities, own.probabilities) {
                for (x, y) in zip(a, b) { largest = max(largest, abs(x - y)) }
            }
            XCTAssertLessThanOrEqual(largest, 1e-5, "\(name): largest probability difference \(largest)")

            // onnxruntime's test accuracy is nnctl eval's (the spec's test_limit is 1,000).
            let (ec, eout, eerr) = try nnctl(["eval", name, "--json"], env: env)
            XCTAssertEqual(ec, 0, eerr)
            let evaluation = try APIJSON.decoder.decode(Evaluation.self, from: Data(eout.utf8))
            XCTAssertEqual(evaluation.records, 1000)
            XCTAssertEqual(try XCTUnwrap(onnx.accuracy), evaluation.accuracy, accuracy: 1e-9, name)

            // The run's export, human output: the same network (one epoch, so the same weights).
            let runFile = "\(d.dir)/\(name)-run.onnx"
            let (rc, rout, rerr) = try nnctl(["export", name, "--format", "onnx", "-o", runFile], env: env)
            XCTAssertEqual(rc, 0, rerr)
            XCTAssertTrue(rout.hasPrefix("wrote \(runFile) (") && rout.hasSuffix(" bytes, onnx)\n"), rout)
            let fromRun = try onnxruntime(runFile, limit: 100).labels
            XCTAssertEqual(zip(fromRun, own.labels).filter { $0 != $1 }.count, 0, "\(name): the run's export")
        }

        // What cannot be exported says why.
        let (nc, _, nerr) = try nnctl(
            ["export", "--model", "digits-tanh", "--format", "npz", "-o", "/dev/null"], env: env)
        XCTAssertEqual(nc, 1)
        XCTAssertTrue(nerr.contains("format npz is a run's export"), nerr)
        let (uc, _, uerr) = try nnctl(
            ["export", "--model", "nothing", "--format", "onnx", "-o", "/dev/null"], env: env)
        XCTAssertEqual(uc, 1)
        XCTAssertTrue(uerr.contains("no model named nothing"), uerr)
        // A model version is --model-version; --version V, its earlier name, still works for scripts.
        for flag in ["--model-version", "--version"] {
            let (vc, _, verr) = try nnctl(
                ["export", "--model", "digits-tanh", flag, "v999", "--format", "onnx", "-o", "/dev/null"], env: env)
            XCTAssertEqual(vc, 1, flag)
            XCTAssertTrue(verr.contains("model digits-tanh has no version v999"), verr)
        }
        let (pc, _, perr) = try nnctl(["predict", "digits-tanh", "/dev/null", "--model-version", "v999"], env: env)
        XCTAssertEqual(pc, 1)
        XCTAssertTrue(perr.contains("model digits-tanh has no version v999"), perr)
        // The help shows each --version once: the bare one is nnctl's own version.
        for command in ["export", "predict"] {
            let (hc, help, _) = try nnctl([command, "--help"])
            XCTAssertEqual(hc, 0)
            XCTAssertTrue(help.contains("--model-version <version>"), help)
            let versionLines = help.split(separator: "\n").filter {
                $0.trimmingCharacters(in: .whitespaces).hasPrefix("--version")
            }
            XCTAssertEqual(
                versionLines.map { $0.trimmingCharacters(in: .whitespaces) },
                ["--version               Show the version."], help)
        }
        // A file that cannot be written says why: a missing directory, a full device.
        for (path, reason) in [
            ("\(d.dir)/no-such-dir/m.onnx", "No such file or directory"), ("/dev/full", "No space left on device"),
        ] {
            let (wc, _, werr) = try nnctl(
                ["export", "--model", "digits-tanh", "--format", "onnx", "-o", path], env: env)
            XCTAssertEqual(wc, 1, werr)
            XCTAssertTrue(werr.contains("cannot write \(path): \(reason)"), werr)
        }
        // On a file system that fills up part-way, the truncated file is removed (as root, on a
        // 64 KiB tmpfs; the model is ≈ 700 KB).
        let small = "\(d.dir)/small-fs"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        if getuid() == 0,
            (try? runProgram("/usr/bin/env", ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", small]))?.0 == 0
        {
            defer { _ = try? runProgram("/usr/bin/env", ["umount", "-l", small]) }
            let (fc, _, ferr) = try nnctl(
                ["export", "--model", "digits-tanh", "--format", "onnx", "-o", "\(small)/m.onnx"], env: env)
            XCTAssertEqual(fc, 1, ferr)
            XCTAssertTrue(ferr.contains("cannot write \(small)/m.onnx: No space left on device"), ferr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: "\(small)/m.onnx"), "a truncated model was left")
        }
        let bad = try d.client.request("GET", "/v1/models/digits-tanh/export?format=pickle")
        XCTAssertEqual(bad.status, 422)
        XCTAssertTrue(bad.text.contains("format must be one of safetensors, npz, onnx, got 'pickle'"), bad.text)
        let (bc, _, berr) = try nnctl(["export", "digits-tanh", "--model", "digits-tanh", "-o", "/dev/null"], env: env)
        XCTAssertNotEqual(bc, 0)
        XCTAssertTrue(berr.contains("name a run or --model, not both"), berr)
    }
}
