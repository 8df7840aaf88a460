import Foundation
import XCTest

@testable import NNData

/// `../shared/datasets/mnist` relative to the package root.
let mnistDir: String = {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    return root.appendingPathComponent("../shared/datasets/mnist").standardized.path
}()

final class DataTests: XCTestCase {
    var tmp: String!
    override func setUp() {
        tmp = NSTemporaryDirectory() + "nnd-data-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: tmp) }

    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let p = "\(tmp!)/\(name)"
        XCTAssertTrue(FileManager.default.createFile(atPath: p, contents: Data(bytes)), p)
        return p
    }
    func be32(_ v: Int) -> [UInt8] {
        [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)]
    }
    func images(_ n: Int, rows: Int = 2, cols: Int = 2, body: Int? = nil) -> [UInt8] {
        [0, 0, 8, 3] + be32(n) + be32(rows) + be32(cols) + [UInt8](repeating: 255, count: body ?? n * rows * cols)
    }
    func labels(_ values: [UInt8]) -> [UInt8] { [0, 0, 8, 1] + be32(values.count) + values }

    func assertDataError(_ body: () throws -> Void, file: String, contains: String, line: UInt = #line) {
        XCTAssertThrowsError(try body(), line: line) { e in
            guard let d = e as? DataError else { return XCTFail("not a DataError: \(e)", line: line) }
            XCTAssertTrue(d.file.hasSuffix(file), "error names \(d.file), expected \(file)", line: line)
            XCTAssertTrue(d.description.contains(contains), "'\(d.description)' lacks '\(contains)'", line: line)
        }
    }

    func testRealMNISTMatchesKnownFacts() throws {
        let train = try MNIST.load(from: mnistDir, train: true)
        XCTAssertEqual(train.count, 60000)
        XCTAssertEqual(train.featureCount, 784)
        XCTAssertEqual(train.labels.prefix(10).map(Int.init), [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
        XCTAssertEqual(train.labelCounts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
        XCTAssertTrue(train.features.buffer.allSatisfy { $0 >= 0 && $0 <= 1 })
        XCTAssertEqual(train.features.buffer.max(), 1)
        let test = try MNIST.load(from: mnistDir, train: false)
        XCTAssertEqual(test.labelCounts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    }

    func testGoodSmallIDXPairLoads() throws {
        let d = try IDXReader.loadPair(images: write("i", images(3)), labels: write("l", labels([1, 2, 9])))
        XCTAssertEqual(d.count, 3)
        XCTAssertEqual(d.featureCount, 4)
        XCTAssertEqual(d.labels, [1, 2, 9])
        XCTAssertEqual(d.features[0], 1)
    }

    func testMalformedIDXFilesAreRefusedNamingFileAndProblem() throws {
        let goodLabels = write("good-labels", labels([1, 2, 3]))
        var wrongMagic = images(3)
        wrongMagic[2] = 0x0D
        assertDataError(
            { _ = try IDXReader.loadPair(images: self.write("magic", wrongMagic), labels: goodLabels) }, file: "magic",
            contains: "magic")
        assertDataError(
            {
                _ = try IDXReader.loadPair(
                    images: self.write("notidx", Array("hello world, not idx".utf8)), labels: goodLabels)
            }, file: "notidx", contains: "wrong magic")
        assertDataError(
            { _ = try IDXReader.loadPair(images: self.write("trunc", self.images(3, body: 7)), labels: goodLabels) },
            file: "trunc", contains: "truncated body")
        assertDataError(
            { _ = try IDXReader.loadPair(images: self.write("extra", self.images(3, body: 20)), labels: goodLabels) },
            file: "extra", contains: "extra")
        assertDataError(
            { _ = try IDXReader.loadPair(images: self.write("hdr", [0, 0, 8, 3, 0, 0]), labels: goodLabels) },
            file: "hdr", contains: "header truncated")
        assertDataError(
            {
                _ = try IDXReader.loadPair(
                    images: self.write("img", self.images(3)), labels: self.write("fewer", self.labels([1, 2])))
            }, file: "fewer", contains: "has 2 labels but")
        assertDataError(
            {
                _ = try IDXReader.loadPair(
                    images: self.write("img2", self.images(3)), labels: self.write("range", self.labels([1, 12, 3])))
            }, file: "range", contains: "label 12 of record 1")
        assertDataError(
            { _ = try IDXReader.loadPair(images: "\(self.tmp!)/missing", labels: goodLabels) }, file: "missing",
            contains: "no such file")
    }

    func testTruncatedAndCorruptGzipAreRefused() throws {
        let gz = [UInt8](FileManager.default.contents(atPath: "\(mnistDir)/t10k-labels-idx1-ubyte.gz")!)
        let truncated = write("t.gz", Array(gz[0..<(gz.count / 2)]))
        assertDataError({ _ = try IDXReader.read(truncated, expectedDims: 1) }, file: "t.gz", contains: "truncated")
        var corrupt = gz
        for i in 20..<60 { corrupt[i] ^= 0x5A }
        let bad = write("c.gz", corrupt)
        assertDataError({ _ = try IDXReader.read(bad, expectedDims: 1) }, file: "c.gz", contains: "gzip")
    }

    func testCSVReaderAndItsErrors() throws {
        let row = (["7"] + (0..<4).map { String($0 * 60) }).joined(separator: ",")
        let d = try CSVReader.load(
            write("ok.csv", Array("label,p0,p1,p2,p3\n\(row)\n\(row)\r\n".utf8)), featureCount: 4)
        XCTAssertEqual(d.count, 2)
        XCTAssertEqual(d.labels, [7, 7])
        XCTAssertEqual(d.features[3], 180 / 255)
        // A spreadsheet's byte-order mark: every record is read, with or without a header line.
        let bom = CSVReader.byteOrderMark
        XCTAssertEqual(
            try CSVReader.load(write("bom.csv", bom + Array("\(row)\n\(row)\n".utf8)), featureCount: 4).count, 2)
        XCTAssertEqual(
            try CSVReader.load(write("bomh.csv", bom + Array("label,p0,p1,p2,p3\n\(row)\n".utf8)), featureCount: 4)
                .count, 1)
        assertDataError(
            { _ = try CSVReader.load(self.write("cols.csv", Array("\(row)\n1,2,3\n".utf8)), featureCount: 4) },
            file: "cols.csv", contains: "line 2: 3 columns, expected 5")
        assertDataError(
            { _ = try CSVReader.load(self.write("lab.csv", Array("11,0,0,0,0\n".utf8)), featureCount: 4) },
            file: "lab.csv", contains: "label 11")
        assertDataError(
            { _ = try CSVReader.load(self.write("px.csv", Array("1,0,300,0,0\n".utf8)), featureCount: 4) },
            file: "px.csv", contains: "pixel 300")
        assertDataError(
            { _ = try CSVReader.load(self.write("nan.csv", Array("1,0,x,0,0\n".utf8)), featureCount: 4) },
            file: "nan.csv", contains: "column 3")
        assertDataError(
            { _ = try CSVReader.load(self.write("empty.csv", []), featureCount: 4) }, file: "empty.csv",
            contains: "no records")
    }

    func testFetchVerifiesContentAndReportsWhatItTried() throws {
        let dest = "\(tmp!)/fetched"
        let src = try MNIST.fetch(into: dest, from: mnistDir) { _ in }
        XCTAssertEqual(src, mnistDir)
        for f in MNIST.files { XCTAssertNotNil(MNIST.path(f, in: dest), f) }
        // A mirror with a wrong file is refused; with no other source reachable the error lists what was tried.
        let badMirror = "\(tmp!)/bad"
        try FileManager.default.createDirectory(atPath: badMirror, withIntermediateDirectories: true)
        for f in MNIST.files {
            try FileManager.default.copyItem(atPath: MNIST.path(f, in: mnistDir)!, toPath: "\(badMirror)/\(f).gz")
        }
        try FileManager.default.removeItem(atPath: "\(badMirror)/t10k-labels-idx1-ubyte.gz")
        try Data([UInt8](labels([1, 2]))).write(to: URL(fileURLWithPath: "\(badMirror)/t10k-labels-idx1-ubyte"))
        var messages: [String] = []
        let dest2 = "\(tmp!)/fetched2"
        // The shared copy beside the checkout is the fallback, so this still succeeds, after saying the mirror failed.
        let used = try MNIST.fetch(into: dest2, from: badMirror) { messages.append($0) }
        XCTAssertNotEqual(used, badMirror)
        XCTAssertTrue(
            messages.contains { $0.contains(badMirror) && $0.contains("does not match the pinned") }, "\(messages)")
    }
}
