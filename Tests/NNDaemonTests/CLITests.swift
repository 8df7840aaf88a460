import Foundation
import NNAPI
import NNEngine
import NNNumerics
import XCTest

/// nnctl as a user drives it: its tables show the figures the daemon sent, it has the manners
/// of kubectl/systemctl (global options anywhere, a default socket, --version, waiting
/// transitions, distinct exit codes), and the API has HTTP's (405 + Allow, HEAD, media types).
final class CLITests: XCTestCase {
    /// Every table nnctl prints (models, list, status, eval, the daemon line) carries the numbers
    /// of the daemon's own JSON answers — the human-readable output is decoded from the same
    /// `NNAPI` types, so a renamed field cannot silently print `-`.
    func testTablesShowTheFiguresOfTheDaemonsAnswers() throws {
        let d = DaemonProcess()
        try d.start()
        let spec = "\(d.dir)/nightly.yaml"
        try (smallSpec(name: "nightly", trainLimit: 2000, epochs: 2) + "\npromotion: {model: digits, margin: 0.5}\n")
            .write(toFile: spec, atomically: true, encoding: .utf8)
        // Global options before the command, as in the README's service example.
        let (code, out, err) = try nnctl(["--socket", d.socket, "retrain", spec])
        XCTAssertEqual(code, 0, out + err)

        let models = try APIJSON.decoder.decode(
            ModelList.self, from: try d.client.request("GET", "/v1/models").body.data)
        let version = try XCTUnwrap(models.models.first?.versions.first)
        let (mc, table, _) = try nnctl(["--socket", d.socket, "models"])
        XCTAssertEqual(mc, 0)
        let row = try XCTUnwrap(table.split(separator: "\n").first { $0.contains(version.version) }, table)
        XCTAssertTrue(row.contains("digits") && row.contains("*"), String(row))
        XCTAssertTrue(row.contains(String(format: "%.2f", version.testAccuracy)), "test accuracy missing: \(row)")
        XCTAssertTrue(row.contains(String(format: "%.2f", version.trainAccuracy)), "train accuracy missing: \(row)")
        XCTAssertTrue(row.contains(ISO8601DateFormatter().string(from: version.createdAt)), "date missing: \(row)")
        XCTAssertTrue(row.contains(version.run), String(row))
        XCTAssertFalse(row.contains(" - "), "a column printed '-': \(row)")

        let run = try APIJSON.decoder.decode(
            RunRecord.self, from: try d.client.request("GET", "/v1/runs/\(version.run)").body.data)
        let test = String(format: "%.2f", try XCTUnwrap(run.testAccuracy))
        let (lc, list, _) = try nnctl(["list", "--socket", d.socket])
        XCTAssertEqual(lc, 0)
        let listRow = try XCTUnwrap(list.split(separator: "\n").first { $0.contains(run.id) }, list)
        XCTAssertTrue(
            listRow.contains("completed") && listRow.contains("2/2") && listRow.contains(test), String(listRow))

        let (sc, status, _) = try nnctl(["status", run.id, "--socket", d.socket])
        XCTAssertEqual(sc, 0)
        let accuracyLine = status.split(separator: "\n").first { $0.hasPrefix("test accuracy") }
        XCTAssertEqual(accuracyLine?.hasSuffix(" \(test)%"), true, status)
        XCTAssertTrue(status.contains("784-64-32-10 relu"), status)
        XCTAssertTrue(status.contains(try XCTUnwrap(run.promotion?.message)), status)

        let evaluation = try APIJSON.decoder.decode(
            Evaluation.self, from: try d.client.request("POST", "/v1/runs/\(run.id)/eval").body.data)
        let (ec, eval, _) = try nnctl(["eval", run.id, "--socket", d.socket])
        XCTAssertEqual(ec, 0)
        XCTAssertTrue(
            eval.contains(
                "test accuracy \(String(format: "%.2f", evaluation.accuracy))% (\(evaluation.records) records"),
            eval)

        let (hc, daemon, _) = try nnctl(["status", "--socket", d.socket])
        XCTAssertEqual(hc, 0)
        XCTAssertTrue(daemon.hasPrefix("nnd \(NNDVersion.current): up "), daemon)
        XCTAssertTrue(daemon.contains("runs: 1 completed"), daemon)

        // --json anywhere prints the daemon's answer, which decodes as the contract's type.
        let (jc, json, _) = try nnctl(["--json", "--socket=\(d.socket)", "models"])
        XCTAssertEqual(jc, 0)
        XCTAssertEqual(
            try APIJSON.decoder.decode(ModelList.self, from: Data(json.utf8)).models.first?.current, version.version)
    }

    /// --version, the default socket, enum options, pause/stop that wait, and exit code 4.
    /// Which first layer a run trains with, and why, in `nnd train`'s header and result line,
    /// `nnctl status` (table and JSON) and /metrics.
    /// `nnd train` with `training.average_from_epoch` says whose mean it kept, in text and in the
    /// `--json` result; the fast preset run shorter than its averaging start is refused, naming
    /// the field and both values.
    func testTrainSaysItKeptTheMeanOfEpochEnds() throws {
        let fast = "\(repoRoot)/etc/nnd/runs/mnist-fast.yaml"
        let common = [
            "train", fast, "--data", sharedMNIST, "--epochs", "3", "--workers", "2", "--set", "data.train_limit=2000",
            "--set", "data.test_limit=500", "--set", "training.average_from_epoch=2",
        ]
        let (c1, text, e1) = try runBuilt("nnd", common)
        XCTAssertEqual(c1, 0, e1)
        XCTAssertTrue(text.contains("nnd: kept the mean of the weights at the ends of epochs 2–3"), text)
        let (c2, json, e2) = try runBuilt("nnd", common + ["--json"])
        XCTAssertEqual(c2, 0, e2)
        let result = try XCTUnwrap(
            JSONSerialization.jsonObject(with: Data(json.split(separator: "\n").last!.utf8)) as? [String: Any])
        XCTAssertEqual(result["averaged_epochs"] as? Int, 2)
        let (c3, _, e3) = try runBuilt("nnd", ["train", fast, "--data", sharedMNIST, "--epochs", "3"])
        XCTAssertNotEqual(c3, 0)
        XCTAssertTrue(
            e3.contains("training.average_from_epoch: 7 must be between 0 (off) and training.epochs (3)"), e3)
    }

    /// Destinations that cannot be written are refused with the system's reason, before any
    /// work: `nnd train --save` before the first epoch (it used to fail after the last one),
    /// `nnd dataset fetch --into` without Foundation's error dump.
    func testUnwritableDestinationsAreRefusedFirst() throws {
        // A --save that cannot be written is refused before training, naming the directory.
        let (c4, o4, e4) = try runBuilt(
            "nnd",
            [
                "train", "\(repoRoot)/etc/nnd/runs/mnist-seed.yaml", "--data", sharedMNIST, "--epochs", "1",
                "--set", "data.train_limit=1000", "--save", "/dev/null/run.ckpt",
            ])
        XCTAssertEqual(c4, 2, e4)
        XCTAssertTrue(e4.contains("nnd: --save /dev/null/run.ckpt: /dev/null: not a directory"), e4)
        XCTAssertFalse(o4.contains("epoch"), "refused before training: \(o4)")
        let (c5, _, e5) = try runBuilt("nnd", ["dataset", "fetch", "mnist", "--into", "/dev/null/mnist"])
        XCTAssertEqual(c5, 1, e5)
        XCTAssertTrue(e5.contains("/dev/null/mnist: cannot create the directory: Not a directory"), e5)
    }

    /// A run spec that cannot be read is a usage error naming the file and the system's reason,
    /// before anything is asked of the daemon (none runs here) or trained.
    func testUnreadableRunSpecsNameTheReason() throws {
        let dir = NSTemporaryDirectory() + "nnd-spec-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let latin1 = "\(dir)/latin1.yaml"
        try Data([0x6E, 0x61, 0x6D, 0x65, 0x3A, 0x20, 0xE9, 0x0A]).write(to: URL(fileURLWithPath: latin1))
        let cases = [
            ("\(dir)/missing.yaml", "cannot read the run spec: No such file or directory"),
            (dir, "cannot read the run spec: Is a directory"),
            (latin1, "the run spec is not UTF-8 text"),
        ]
        let socket = ["--socket", "\(dir)/no-daemon.sock"]
        for (path, reason) in cases {
            for command in [["nnctl", "start", path], ["nnctl", "retrain", path], ["nnd", "train", path]] {
                let (code, out, err) = try runBuilt(
                    command[0], Array(command.dropFirst()) + (command[0] == "nnctl" ? socket : []))
                XCTAssertEqual(code, 2, "\(command): \(out)\(err)")
                XCTAssertEqual(err, "\(command[0]): \(path): \(reason)\n", "\(command)")
                XCTAssertEqual(out, "")
            }
        }
    }

    /// A spec the daemon refuses is reported against the file it came from, or the `--set` that
    /// gave the bad value, by `nnctl start` and `nnctl retrain` as by `nnd train`: the daemon
    /// itself only ever sees the text. With --json the error object comes on stdout too.
    func testRefusedSpecsSayWhereTheProblemIs() throws {
        let d = DaemonProcess()
        try d.start()
        let badYAML = "\(d.dir)/bad-syntax.yaml"
        try "name: x\nmodel: [\n".write(toFile: badYAML, atomically: true, encoding: .utf8)
        let badValue = "\(d.dir)/bad-value.yaml"
        try "name: x\ntraining: {epochs: -2}\n".write(toFile: badValue, atomically: true, encoding: .utf8)
        let good = "\(d.dir)/good.yaml"
        try smallSpec(name: "good").write(toFile: good, atomically: true, encoding: .utf8)
        let cases: [(file: String, set: [String], says: String)] = [
            (badYAML, [], "\(badYAML): not valid YAML/JSON: "),
            (badValue, [], "training.epochs: -2 must be between 1 and 100000 (in \(badValue))"),
            (
                good, ["--set", "training.epochs=-3"],
                "training.epochs: -3 must be between 1 and 100000 (from --set training.epochs=-3)"
            ),
            (good, ["--set", "data.path=/x"], "data.path: unknown field (allowed: "),
        ]
        for c in cases {
            for command in [["nnctl", "start"], ["nnctl", "retrain"], ["nnd", "train"]] {
                let isClient = command[0] == "nnctl"
                let (code, out, err) = try runBuilt(
                    command[0],
                    Array(command.dropFirst()) + [c.file] + c.set + (isClient ? ["--socket", d.socket] : []))
                XCTAssertEqual(code, isClient ? 1 : 2, "\(command) \(c.file): \(out)\(err)")
                XCTAssertTrue(err.hasPrefix("\(command[0]): "), err)
                XCTAssertTrue(err.contains(c.says), "\(command): \(err)")
                if c.set.contains("data.path=/x") {
                    XCTAssertTrue(err.contains("(from --set data.path=/x)"), err)
                }
                if isClient { XCTAssertTrue(err.contains("(HTTP 422 invalid_spec)"), err) }
                XCTAssertEqual(out, "")
            }
        }
        // With --json, a script also gets the daemon's error object on stdout (the same message).
        for c in cases {
            let (code, out, err) = try nnctl(["start", c.file] + c.set + ["--json", "--socket", d.socket])
            XCTAssertEqual(code, 1, out + err)
            let error = try APIJSON.decoder.decode(ErrorBody.self, from: Data(out.utf8)).error
            XCTAssertEqual(error.code, "invalid_spec")
            XCTAssertEqual(error.status, 422)
            XCTAssertTrue(error.message.contains(c.says), error.message)
            XCTAssertTrue(err.contains(c.says), err)
        }
        let (code, out, _) = try nnctl(["--json", "status", "no-such-run", "--socket", d.socket])
        XCTAssertEqual(code, 1)
        let notFound = try APIJSON.decoder.decode(ErrorBody.self, from: Data(out.utf8)).error
        XCTAssertEqual(notFound.code, "not_found")
        XCTAssertTrue(notFound.message.contains("no-such-run"), notFound.message)
        let runs = try nnctl(["list", "--json", "--socket", d.socket])
        XCTAssertEqual(try APIJSON.decoder.decode(RunList.self, from: Data(runs.1.utf8)).runs.count, 0, runs.1)
    }

    func testTheFirstLayersInputPathIsShownEverywhere() throws {
        let spec = "\(repoRoot)/etc/nnd/runs/mnist-seed.yaml"
        let common = [
            "train", spec, "--data", sharedMNIST, "--epochs", "1", "--workers", "2", "--set", "data.train_limit=2000",
            "--set", "data.test_limit=500",
        ]
        let (c1, auto, e1) = try runBuilt("nnd", common)
        XCTAssertEqual(c1, 0, e1)
        XCTAssertTrue(auto.contains("first layer sparse (auto: inputs 19."), auto)
        XCTAssertTrue(auto.contains("% non-zero (sparse at or below 22 %)"), auto)
        let (c2, dense, e2) = try runBuilt("nnd", common + ["--set", "model.input_path=dense", "--json"])
        XCTAssertEqual(c2, 0, e2)
        let result = try XCTUnwrap(
            JSONSerialization.jsonObject(with: Data(dense.split(separator: "\n").last!.utf8)) as? [String: Any])
        XCTAssertEqual(result["input_path"] as? String, "dense")
        let (_, sparse, _) = try runBuilt("nnd", common + ["--set", "model.input_path=sparse", "--json"])
        let sparseResult = try XCTUnwrap(
            JSONSerialization.jsonObject(with: Data(sparse.split(separator: "\n").last!.utf8)) as? [String: Any])
        XCTAssertEqual(sparseResult["input_path"] as? String, "sparse")
        XCTAssertEqual(try XCTUnwrap(sparseResult["input_density"] as? Double), 0.19, accuracy: 0.01)
        // The same network either way (sparse and dense agree to 1e-5): the same accuracy.
        XCTAssertEqual(
            try XCTUnwrap(result["test_accuracy"] as? Double), try XCTUnwrap(sparseResult["test_accuracy"] as? Double),
            accuracy: 0.1)

        let daemon = DaemonProcess()
        try daemon.start()
        let id = try daemon.createRun(smallSpec(name: "path", trainLimit: 1000, epochs: 1))
        try daemon.waitFor(id, states: ["completed"])
        let (_, table, _) = try nnctl(["--socket", daemon.socket, "status", id])
        XCTAssertTrue(table.contains("first layer     sparse, inputs 18.9 % non-zero"), table)
        let (_, json, _) = try nnctl(["--socket", daemon.socket, "status", id, "--json"])
        let record = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual((record["progress"] as? [String: Any])?["input_path"] as? String, "sparse")
        let metrics = try daemon.client.request("GET", "/metrics").text
        XCTAssertTrue(metrics.contains("nnd_run_sparse_input{run=\"\(id)\",name=\"path\"} 1.0"), metrics)
        XCTAssertTrue(metrics.contains("nnd_run_input_density{run=\"\(id)\""), metrics)
    }

    /// `nnd bench`: the GEMM reference, the dense and sparse steps on 1 and 2 workers and their
    /// speedups, in the table and in JSON (one short round; the figures are not asserted, only
    /// that each was measured).
    func testBenchReportsEveryMeasurementInTextAndJSON() throws {
        let (c1, text, e1) = try runBuilt("nnd", ["bench", "--rounds", "1", "--seconds", "0.2", "--workers", "2"])
        XCTAssertEqual(c1, 0, e1)
        for line in [
            "GEMM reference:", "hidden-layer products:       \(BLAS.smallProductKernel)", "step, 1 worker, batch 64:",
            "step, 2 workers, batch 64:", "speedup 2 workers / 1:",
            "sparse first layer (", "inputs 19% non-zero", "sparse step, 1 worker:",
            "2-worker sparse step (best round):", "1-worker sparse step (best round):",
            "2 independent 1-worker sparse steps at once:",
            "alternating pairs (4 × 0.02 s slices, 1 and 2 in turn): median speedup sparse step",
            "cores' round trip in the pairs: ", " with the cores near (≤ ",
        ] {
            XCTAssertTrue(text.contains(line), "missing '\(line)' in:\n\(text)")
        }
        let (c2, json, e2) = try runBuilt(
            "nnd", ["bench", "--rounds", "1", "--seconds", "0.2", "--workers", "2", "--density", "0.1", "--json"])
        XCTAssertEqual(c2, 0, e2)
        let r = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any], json)
        for key in [
            "gemm_gflops_one_core", "gemm_gflops_all_cores", "step_samples_per_second_one_worker",
            "step_samples_per_second_all_workers", "speedup", "sparse_step_samples_per_second",
            "sparse_step_samples_per_second_one_worker", "sparse_speedup",
            "dense_step_on_sparse_data_samples_per_second", "independent_sparse_samples_per_second",
            "independent_sparse_speedup",
        ] {
            XCTAssertGreaterThan(try XCTUnwrap(r[key] as? Double, "\(key) in \(json)"), 0, key)
        }
        let onePhases = try XCTUnwrap(r["sparse_phases_one_worker_of_best_round"] as? [String: Any], json)
        XCTAssertGreaterThan(try XCTUnwrap(onePhases["first_layer_microseconds"] as? Double), 0)
        XCTAssertEqual(r["sparse_density"] as? Double, 0.1)
        XCTAssertEqual(r["small_product_kernel"] as? String, BLAS.smallProductKernel)
        // The kernel nnd would choose beside the one that ran, in JSON and, where the one that
        // ran is narrower (an OPENBLAS_CORETYPE in the environment), in the table.
        let best = BLASKernelSelector.bestKernelForThisCPU
        XCTAssertEqual(r["blas_kernel_best_for_cpu"] as? String, best, json)
        let ran = try XCTUnwrap(r["blas_kernel"] as? String, json)
        XCTAssertEqual(
            text.contains("BLAS kernel:                 \(ran) (this CPU's best: \(best));"),
            BLASKernelSelector.isNarrower(ran, than: best), text)
        XCTAssertEqual(r["workers"] as? Int, 2)
        // Four quads per round, each ratio measured: the sparse step's and the GEMM reference's.
        let pairs = try XCTUnwrap(r["pairs"] as? [String: Any], json)
        XCTAssertEqual(pairs["count"] as? Int, 4)
        XCTAssertEqual((pairs["sparse_speedups"] as? [Double])?.count, 4, json)
        XCTAssertEqual((pairs["gemm_speedups"] as? [Double])?.count, 4, json)
        XCTAssertGreaterThan(try XCTUnwrap(pairs["sparse_median_speedup"] as? Double), 0)
        XCTAssertEqual(pairs["gemm_scaling_threshold"] as? Double, 1.85)
        // The cores' round trip around each quad, and the quads at most twice the fastest.
        let trips = try XCTUnwrap(pairs["round_trip_nanoseconds"] as? [Any], json)
        XCTAssertEqual(trips.count, 4, json)
        let measured = trips.compactMap { $0 as? Double }
        XCTAssertFalse(measured.isEmpty, json)
        XCTAssertTrue(measured.allSatisfy { $0 > 0 }, json)
        XCTAssertEqual(
            pairs["quads_cores_near"] as? Int, measured.filter { $0 <= 2 * measured.min()! }.count, json)
        let (c3, _, e3) = try runBuilt("nnd", ["bench", "--seconds", "0"])
        XCTAssertEqual(c3, 2)
        XCTAssertTrue(e3.contains("--seconds 0.0 must be in (0, 60]"), e3)
    }

    func testCommandLineManners() throws {
        let (vc, version, _) = try nnctl(["--version"])
        XCTAssertEqual(vc, 0)
        XCTAssertEqual(version.trimmingCharacters(in: .whitespacesAndNewlines), NNDVersion.current)
        // `nnd info` names the build: version and the commit make wrote into commit.h.
        let (ic, info, _) = try runBuilt("nnd", ["info"])
        XCTAssertEqual(ic, 0)
        let header = try? String(contentsOfFile: "\(repoRoot)/Sources/CBuildInfo/commit.h", encoding: .utf8)
        let commit = header?.split(separator: "\"").dropFirst().first.map(String.init) ?? "unknown"
        XCTAssertEqual(
            info.split(separator: "\n").first.map(String.init), "nnd \(NNDVersion.current) (commit \(commit))")
        // and the kernels it picked for this CPU
        XCTAssertTrue(info.contains("hidden-layer products: \(BLAS.smallProductKernel)\n"), info)
        XCTAssertTrue(info.contains("sparse first-layer kernels: \(DataParallelEngine.sparseKernels)\n"), info)
        // An environment that holds OpenBLAS to narrower kernels than the CPU runs is honoured
        // and named: by `nnd info`, and on stderr by the commands that train.
        #if arch(x86_64)
            if BLASKernelSelector.currentCPUFlags().contains("avx") {
                let held = ["OPENBLAS_CORETYPE": "Prescott"]
                let (hc, heldInfo, _) = try runBuilt("nnd", ["info"], env: held)
                XCTAssertEqual(hc, 0)
                XCTAssertTrue(
                    heldInfo.contains(
                        "blas kernel: Prescott (warning: OPENBLAS_CORETYPE=Prescott in the environment holds OpenBLAS to "
                            + "its 128-bit Prescott kernels; this CPU runs its "),
                    heldInfo)
                // when the work starts, not before a command's own error about its arguments
                let tiny = [
                    "train", "\(repoRoot)/etc/nnd/runs/mnist-seed.yaml", "--data", sharedMNIST, "--epochs", "1",
                    "--set", "data.train_limit=500", "--set", "data.test_limit=100", "--json",
                ]
                let (tc, _, heldTrain) = try runBuilt("nnd", tiny, env: held)
                XCTAssertEqual(tc, 0, heldTrain)
                XCTAssertTrue(
                    heldTrain.hasPrefix("nnd: warning: OPENBLAS_CORETYPE=Prescott in the environment"), heldTrain)
                let (_, _, refused) = try runBuilt("nnd", ["bench", "--seconds", "0"], env: held)
                XCTAssertEqual(refused, "nnd: --seconds 0.0 must be in (0, 60]\n")
                let (_, chosenInfo, _) = try runBuilt("nnd", ["info"], env: ["OPENBLAS_CORETYPE": ""])
                XCTAssertFalse(chosenInfo.contains("warning"), chosenInfo)
            }
        #endif

        let d = DaemonProcess()
        try d.start()
        // The default socket: the user's own daemon's ($XDG_RUNTIME_DIR/nnd/nnd.sock) when it exists.
        let runtime = "\(d.dir)/xdg"
        try FileManager.default.createDirectory(atPath: "\(runtime)/nnd", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: "\(runtime)/nnd/nnd.sock", withDestinationPath: d.socket)
        let (dc, noRuns, dErr) = try nnctl(["list"], env: ["NND_SOCKET": "", "XDG_RUNTIME_DIR": runtime])
        XCTAssertEqual(dc, 0, dErr)
        XCTAssertEqual(noRuns, "no runs\n")
        if !FileManager.default.fileExists(atPath: "/run/nnd/nnd.sock") {
            let empty = "\(d.dir)/empty"
            let (uc, _, unreachable) = try nnctl(["list"], env: ["NND_SOCKET": "", "XDG_RUNTIME_DIR": empty])
            XCTAssertEqual(uc, 3)
            XCTAssertTrue(unreachable.contains("\(empty)/nnd/nnd.sock"), "the socket tried is named: \(unreachable)")
        }

        // Enum options list their values.
        let (fc, _, formatError) = try nnctl([
            "export", "x", "--format", "pickle", "-o", "/dev/null", "--socket", d.socket,
        ])
        XCTAssertEqual(fc, 2)
        XCTAssertTrue(
            formatError.contains("safetensors") && formatError.contains("npz") && formatError.contains("onnx"),
            formatError)
        let (hc, help, _) = try nnctl(["eval", "--help"])
        XCTAssertEqual(hc, 0)
        XCTAssertTrue(help.contains("test") && help.contains("train"), help)

        // pause and stop return with the run there.
        let env = ["NND_SOCKET": d.socket]
        let run = try d.createRun(longSpec(name: "long", everySteps: 200))
        try d.waitFor(run, states: ["running"])
        let (pc, paused, pErr) = try nnctl(["pause", run], env: env)
        XCTAssertEqual(pc, 0, pErr)
        XCTAssertEqual(paused, "\(run): pause → paused\n")
        XCTAssertEqual(try d.state(run), "paused")
        XCTAssertEqual(try nnctl(["resume", run], env: env).0, 0)
        try d.waitFor(run, states: ["running"])
        let (sc, stopped, sErr) = try nnctl(["stop", run], env: env)
        XCTAssertEqual(sc, 0, sErr)
        XCTAssertTrue(stopped.hasSuffix("stop → stopped\n") || stopped.hasSuffix("stop → completed\n"), stopped)
        XCTAssertNotEqual(try d.state(run), "running")

        // A run that fails while followed: exit 4 with the reason.
        let specPath = "\(d.dir)/diverge.yaml"
        try smallSpec(name: "diverge", trainLimit: 2000, epochs: 2).write(
            toFile: specPath, atomically: true, encoding: .utf8)
        let (wc, _, failed) = try nnctl(["start", specPath, "--wait", "--set", "training.learning_rate=1e9"], env: env)
        XCTAssertEqual(wc, 4, failed)
        XCTAssertTrue(failed.contains("ended failed") && failed.contains("diverged"), failed)
    }

    /// 405 with Allow for a known path, HEAD wherever GET works, YAML specs, 415 for other types.
    func testHTTPManners() throws {
        let d = DaemonProcess()
        try d.start()
        let delete = try d.client.request("DELETE", "/v1/health")
        XCTAssertEqual(delete.status, 405, delete.text)
        XCTAssertEqual(delete.headers["allow"], "GET, HEAD")
        XCTAssertTrue(delete.text.contains("\"method_not_allowed\""), delete.text)
        let options = try d.client.request("OPTIONS", "/v1/runs")
        XCTAssertEqual(options.status, 405)
        XCTAssertEqual(options.headers["allow"], "GET, HEAD, POST")
        XCTAssertEqual(try d.client.request("GET", "/v1/nothing").status, 404)
        XCTAssertEqual(try d.client.request("PUT", "/v1/runs/some-run/pause").headers["allow"], "POST")

        let head = try d.client.request("HEAD", "/v1/health")
        XCTAssertEqual(head.status, 200)
        XCTAssertTrue(head.body.isEmpty)
        XCTAssertEqual(try d.client.request("HEAD", "/metrics").status, 200)

        let yaml = smallSpec(name: "from-yaml", trainLimit: 500, epochs: 1)
        let created = try d.client.request(
            "POST", "/v1/runs?name=yaml-run", body: Array(yaml.utf8), contentType: "application/yaml")
        XCTAssertEqual(created.status, 201, created.text)
        let record = try APIJSON.decoder.decode(RunRecord.self, from: created.body.data)
        XCTAssertEqual(record.name, "yaml-run")
        XCTAssertEqual(record.spec.training.epochs, 1)
        let badYAML = try d.client.request("POST", "/v1/runs", body: Array("model: [".utf8), contentType: "text/yaml")
        XCTAssertEqual(badYAML.status, 422, badYAML.text)
        XCTAssertTrue(badYAML.text.contains("invalid_spec"), badYAML.text)

        let plain = try d.client.request("POST", "/v1/runs", body: Array("x".utf8), contentType: "text/plain")
        XCTAssertEqual(plain.status, 415, plain.text)
        let unsupported = try APIJSON.decoder.decode(ErrorBody.self, from: plain.body.data).error
        XCTAssertEqual(unsupported.code, "unsupported_media_type")
        XCTAssertTrue(unsupported.message.contains("application/json or application/yaml"), unsupported.message)
        let wrongType = try d.client.request("POST", "/v1/runs", json: Array(#"{"spec_yaml": 5}"#.utf8))
        XCTAssertEqual(wrongType.status, 422)
        let error = try APIJSON.decoder.decode(ErrorBody.self, from: wrongType.body.data).error
        XCTAssertEqual(error.field, "spec_yaml")
        XCTAssertEqual(error.message, "spec_yaml must be a string")
    }
}

extension Array where Element == UInt8 {
    var data: Data { Data(self) }
}
