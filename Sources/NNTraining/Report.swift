import Foundation
import NNAPI
import NNCheckpoint
import NNData

/// A self-contained HTML training report (inline SVG, no network fetches): cost and learning
/// rate per epoch, accuracy per epoch, confusion matrix, a grid of test digits with true and
/// predicted labels, the worst-classified digits, the layer diagram, and the run's spec,
/// timings and machine.
public struct TrainingReport: Sendable {
    public struct Machine: Sendable {
        public var cores: Int, numaNodes: Int, blasKernel: String, workers: Int
        public init(cores: Int, numaNodes: Int, blasKernel: String, workers: Int) {
            self.cores = cores
            self.numaNodes = numaNodes
            self.blasKernel = blasKernel
            self.workers = workers
        }
    }

    public var runID: String
    public var spec: RunSpec
    public var state: String
    public var history: [EpochRecord]
    public var machine: Machine
    /// Test set, its predictions and the probability given to the true class, from the latest checkpoint.
    public var test: Dataset
    public var predictions: [Int32]
    public var trueClassProbability: [Float]
    public var checkpointEpoch: Int
    /// What the run trained on: training records and the data fingerprint, when known.
    public var trainRecords: Int?
    public var dataFingerprint: String?

    public init(
        runID: String, spec: RunSpec, state: String, history: [EpochRecord], machine: Machine, test: Dataset,
        predictions: [Int32], trueClassProbability: [Float], checkpointEpoch: Int, trainRecords: Int? = nil,
        dataFingerprint: String? = nil
    ) {
        self.trainRecords = trainRecords
        self.dataFingerprint = dataFingerprint
        self.runID = runID
        self.spec = spec
        self.state = state
        self.history = history
        self.machine = machine
        self.test = test
        self.predictions = predictions
        self.trueClassProbability = trueClassProbability
        self.checkpointEpoch = checkpointEpoch
    }

    public func html() -> String {
        let classes = spec.model.layers.last!
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
        for (i, p) in predictions.enumerated() { confusion[Int(test.labels[i])][Int(p)] += 1 }
        let correct = zip(predictions, test.labels).filter { $0 == $1 }.count
        let accuracy = Double(correct) / Double(max(predictions.count, 1)) * 100
        let wrong = (0..<predictions.count).filter { predictions[$0] != test.labels[$0] }
            .sorted { trueClassProbability[$0] < trueClassProbability[$1] }.prefix(12)
        let totalSeconds = history.reduce(0) { $0 + $1.seconds }
        var h = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>nnd report: \(esc(runID))</title>
            <style>
            body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1100px; }
            h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ccc; }
            table { border-collapse: collapse; } td, th { padding: 3px 8px; border: 1px solid #ddd; font-size: 13px; text-align: right; }
            .grid { display: flex; flex-wrap: wrap; gap: 10px; } .digit { text-align: center; font-size: 12px; }
            .bad { color: #b00; } pre { background: #f5f5f5; padding: 8px; font-size: 12px; }
            </style></head><body>
            <h1>nnd training report — \(esc(spec.name)) (\(esc(runID)))</h1>
            <p>State <b>\(esc(state))</b>; \(history.count) of \(spec.training.epochs) epochs; test accuracy of the checkpoint after epoch \(checkpointEpoch): <b>\(String(format: "%.2f", accuracy)) %</b> (\(correct)/\(predictions.count)).</p>
            <h2>Cost and learning rate per epoch</h2>
            \(lineChart(series: [("cost", "#1f77b4", history.map(\.cost))], secondary: ("learning rate", "#d62728", history.map { Double($0.learningRate) }), yLabel: "cost"))
            <h2>Accuracy per epoch</h2>
            \(lineChart(series: [("train % (running)", "#2ca02c", history.map(\.trainAccuracy)), ("test %", "#ff7f0e", history.map { $0.testAccuracy ?? .nan })], secondary: nil, yLabel: "%"))
            <h2>Confusion matrix (test set; rows: true, columns: predicted)</h2>
            \(confusionTable(confusion))
            <h2>Test digits with true and predicted labels</h2>
            <div class="grid">
            """
        for i in 0..<min(12, predictions.count) { h += digitCell(i) }
        h +=
            "</div>\n<h2>Worst-classified test digits (lowest probability for the true class)</h2>\n<div class=\"grid\">\n"
        for i in wrong { h += digitCell(i, extra: String(format: "p(true)=%.2g", trueClassProbability[i])) }
        if wrong.isEmpty { h += "<p>No misclassified digits.</p>" }
        h += "</div>\n<h2>Network</h2>\n\(layerDiagram())\n"
        h += "<h2>Run</h2>\n<table>"
        let rows: [(String, String)] = [
            ("mode", "\(spec.training.mode.rawValue), batch \(spec.training.batchSize)"),
            ("optimizer", spec.training.optimizer.rawValue),
            ("learning rate", "\(spec.training.learningRate) (anneal \(spec.training.anneal))"),
            ("λ", "\(spec.training.lambda)"),
            ("init / activation", "\(spec.model.initialisation.rawValue) / \(spec.model.activation.rawValue)"),
            ("seed", "\(spec.training.seed)"),
            (
                "data",
                "\(trainRecords.map { "\($0) training records" } ?? "training records not recorded"), "
                    + "fingerprint \(dataFingerprint ?? "-")"
            ),
            (
                "training time",
                String(format: "%.1f s (%.3f s/epoch)", totalSeconds, totalSeconds / Double(max(history.count, 1)))
            ),
            (
                "machine",
                "\(machine.cores) cores, \(machine.numaNodes) NUMA node(s), \(machine.workers) workers, BLAS kernel \(machine.blasKernel)"
            ),
        ]
        for (k, v) in rows {
            h += "<tr><th style=\"text-align:left\">\(esc(k))</th><td style=\"text-align:left\">\(esc(v))</td></tr>"
        }
        h +=
            "</table>\n<h2>Per-epoch history</h2>\n<table><tr><th>epoch</th><th>cost</th><th>lr</th><th>train %</th><th>test %</th><th>seconds</th></tr>"
        for e in history {
            h +=
                "<tr><td>\(e.epoch)</td><td>\(String(format: "%.6f", e.cost))</td><td>\(e.learningRate)</td><td>\(String(format: "%.2f", e.trainAccuracy))</td><td>\(e.testAccuracy.map { String(format: "%.2f", $0) } ?? "-")</td><td>\(String(format: "%.3f", e.seconds))</td></tr>"
        }
        let specJSON = (try? APIJSON.prettyEncoder.encode(spec)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        h += "</table>\n<h2>Spec</h2>\n<pre>\(esc(specJSON))</pre>\n</body></html>\n"
        return h
    }

    func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(
            of: ">", with: "&gt;"
        ).replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// Line chart with up to two y axes (the secondary on the right).
    func lineChart(series: [(String, String, [Double])], secondary: (String, String, [Double])?, yLabel: String)
        -> String
    {
        let w = 760.0
        let hgt = 300.0
        let left = 60.0
        let right = secondary == nil ? 20.0 : 70.0
        let top = 20.0
        let bottom = 40.0
        let pw = w - left - right
        let ph = hgt - top - bottom
        let n = max(series.first?.2.count ?? 0, 1)
        func range(_ vs: [Double]) -> (Double, Double) {
            let f = vs.filter(\.isFinite)
            guard var lo = f.min(), var hi = f.max() else { return (0, 1) }
            // A flat series sits mid-chart.
            if hi - lo < 1e-12 { (lo, hi) = lo > 0 ? (lo * 0.5, hi * 1.5) : (lo - 0.5, hi + 0.5) }
            return (lo, hi)
        }
        let (lo, hi) = range(series.flatMap(\.2))
        func x(_ i: Int) -> Double { left + (n == 1 ? pw / 2 : Double(i) / Double(n - 1) * pw) }
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(hgt))\" viewBox=\"0 0 \(Int(w)) \(Int(hgt))\">"
        svg += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(pw)\" height=\"\(ph)\" fill=\"#fafafa\" stroke=\"#999\"/>"
        for t in 0...4 {
            let v = lo + (hi - lo) * Double(t) / 4
            let y = top + ph - Double(t) / 4 * ph
            svg +=
                "<line x1=\"\(left)\" x2=\"\(left + pw)\" y1=\"\(y)\" y2=\"\(y)\" stroke=\"#e5e5e5\"/><text x=\"\(left - 6)\" y=\"\(y + 4)\" font-size=\"11\" text-anchor=\"end\">\(fmt(v))</text>"
        }
        for i in stride(from: 0, to: n, by: max(1, n / 10)) {
            svg += "<text x=\"\(x(i))\" y=\"\(top + ph + 16)\" font-size=\"11\" text-anchor=\"middle\">\(i + 1)</text>"
        }
        svg += "<text x=\"\(left + pw / 2)\" y=\"\(hgt - 6)\" font-size=\"12\" text-anchor=\"middle\">epoch</text>"
        svg +=
            "<text x=\"14\" y=\"\(top + ph / 2)\" font-size=\"12\" transform=\"rotate(-90 14 \(top + ph / 2))\" text-anchor=\"middle\">\(esc(yLabel))</text>"
        func path(_ vs: [Double], _ lo: Double, _ hi: Double, _ color: String) -> String {
            var d = ""
            var pts = ""
            for (i, v) in vs.enumerated() where v.isFinite {
                let y = top + ph - (v - lo) / (hi - lo) * ph
                d += (d.isEmpty ? "M" : "L") + "\(x(i)),\(y) "
                pts += "<circle cx=\"\(x(i))\" cy=\"\(y)\" r=\"2.5\" fill=\"\(color)\"/>"
            }
            return "<path d=\"\(d)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>" + pts
        }
        var legend = 0.0
        for (name, color, vs) in series {
            svg += path(vs, lo, hi, color)
            svg +=
                "<rect x=\"\(left + 10 + legend)\" y=\"\(top + 8)\" width=\"12\" height=\"4\" fill=\"\(color)\"/><text x=\"\(left + 26 + legend)\" y=\"\(top + 14)\" font-size=\"11\">\(esc(name))</text>"
            legend += 150
        }
        if let (name, color, vs) = secondary {
            let (slo, shi) = range(vs)
            svg += path(vs, slo, shi, color)
            for t in 0...4 {
                let v = slo + (shi - slo) * Double(t) / 4
                let y = top + ph - Double(t) / 4 * ph
                svg += "<text x=\"\(left + pw + 6)\" y=\"\(y + 4)\" font-size=\"11\" fill=\"\(color)\">\(fmt(v))</text>"
            }
            svg +=
                "<rect x=\"\(left + 10 + legend)\" y=\"\(top + 8)\" width=\"12\" height=\"4\" fill=\"\(color)\"/><text x=\"\(left + 26 + legend)\" y=\"\(top + 14)\" font-size=\"11\">\(esc(name)) (right axis)</text>"
        }
        return svg + "</svg>"
    }

    func fmt(_ v: Double) -> String {
        abs(v) >= 100 ? String(format: "%.0f", v) : abs(v) >= 1 ? String(format: "%.2f", v) : String(format: "%.4f", v)
    }

    func confusionTable(_ m: [[Int]]) -> String {
        let maxOff =
            m.enumerated().flatMap { r in r.element.enumerated().filter { $0.offset != r.offset }.map(\.element) }.max()
            ?? 1
        var t = "<table><tr><th></th>" + (0..<m.count).map { "<th>\($0)</th>" }.joined() + "</tr>"
        for (i, row) in m.enumerated() {
            t += "<tr><th>\(i)</th>"
            for (j, v) in row.enumerated() {
                let bg =
                    i == j
                    ? "#d8f0d8"
                    : v == 0
                        ? "#fff"
                        : "rgba(220,40,40,\(String(format: "%.2f", 0.15 + 0.6 * Double(v) / Double(max(maxOff, 1)))))"
                t += "<td style=\"background:\(bg)\">\(v)</td>"
            }
            t += "</tr>"
        }
        return t + "</table>"
    }

    func digitCell(_ i: Int, extra: String = "") -> String {
        let side = Int(Double(test.featureCount).squareRoot())
        var svg =
            "<svg width=\"84\" height=\"84\" viewBox=\"0 0 \(side) \(side)\"><rect width=\"\(side)\" height=\"\(side)\" fill=\"#fff\" stroke=\"#ccc\" stroke-width=\"0.3\"/>"
        if side * side == test.featureCount {
            let base = test.features.pointer + i * test.featureCount
            for p in 0..<test.featureCount where base[p] > 0.05 {
                svg +=
                    "<rect x=\"\(p % side)\" y=\"\(p / side)\" width=\"1\" height=\"1\" fill-opacity=\"\(String(format: "%.2f", base[p]))\"/>"
            }
        }
        svg += "</svg>"
        let ok = predictions[i] == test.labels[i]
        return
            "<div class=\"digit\">\(svg)<br>true \(test.labels[i]), <span class=\"\(ok ? "" : "bad")\">pred \(predictions[i])</span>\(extra.isEmpty ? "" : "<br>\(extra)")</div>\n"
    }

    func layerDiagram() -> String {
        let layers = spec.model.layers
        let w = 760.0
        let hgt = 220.0
        let maxSize = Double(layers.max() ?? 1)
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(hgt))\">"
        let step = w / Double(layers.count)
        for (i, s) in layers.enumerated() {
            let bh = 30 + 150 * (Double(s) / maxSize).squareRoot()
            let x = step * Double(i) + step / 2 - 40
            let y = (hgt - 20 - bh) / 2
            let kind = i == 0 ? "input" : i == layers.count - 1 ? "softmax" : spec.model.activation.rawValue
            svg +=
                "<rect x=\"\(x)\" y=\"\(y)\" width=\"80\" height=\"\(bh)\" rx=\"6\" fill=\"#dbe9f6\" stroke=\"#4a7db5\"/>"
            svg += "<text x=\"\(x + 40)\" y=\"\(y + bh / 2)\" font-size=\"14\" text-anchor=\"middle\">\(s)</text>"
            svg += "<text x=\"\(x + 40)\" y=\"\(hgt - 6)\" font-size=\"12\" text-anchor=\"middle\">\(kind)</text>"
            if i > 0 {
                svg +=
                    "<line x1=\"\(x - step + 80)\" y1=\"\((hgt - 20) / 2)\" x2=\"\(x)\" y2=\"\((hgt - 20) / 2)\" stroke=\"#888\" stroke-width=\"2\"/>"
            }
        }
        return svg + "</svg>"
    }
}
