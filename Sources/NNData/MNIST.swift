import Foundation
import NNNumerics

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The MNIST files, their pinned content hashes, and where to find them.
public enum MNIST {
    public static let files = [
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    ]

    /// SHA-256 of the decompressed content. Mirrors serve differently compressed .gz files of
    /// the same content, so the content is what is pinned.
    public static let contentSHA256: [String: String] = [
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ]

    public static let publicMirrors = [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ]

    /// Path of one file in `dir`, preferring the plain file over the .gz.
    public static func path(_ name: String, in dir: String) -> String? {
        for candidate in ["\(dir)/\(name)", "\(dir)/\(name).gz"] where FileManager.default.fileExists(atPath: candidate)
        {
            return candidate
        }
        return nil
    }

    /// Extra training shards beside the base files, sorted by name: every
    /// `train-<name>-images-idx3-ubyte[.gz]` with its `train-<name>-labels-idx1-ubyte[.gz]`
    /// (e.g. `train-2026-11-30-images-idx3-ubyte.gz`, what a nightly export adds). An images file
    /// without its labels is an error naming the missing file.
    public static func trainingShards(in dir: String) throws -> [(images: String, labels: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        var shards: [(images: String, labels: String)] = []
        for name in names.sorted() where name.hasPrefix("train-") && !name.hasPrefix("train-images-") {
            let plain = name.hasSuffix(".gz") ? String(name.dropLast(3)) : name
            guard plain.hasSuffix("-images-idx3-ubyte") else { continue }
            // The plain file wins over its .gz, as for the base files.
            if name.hasSuffix(".gz") && names.contains(plain) { continue }
            let labelsName = String(plain.dropLast("-images-idx3-ubyte".count)) + "-labels-idx1-ubyte"
            guard let labels = path(labelsName, in: dir) else {
                throw DataError(
                    file: "\(dir)/\(labelsName)[.gz]", "missing: the training shard \(dir)/\(name) has no labels file")
            }
            shards.append(("\(dir)/\(name)", labels))
        }
        return shards
    }

    public static func load(from dir: String, train: Bool, limit: Int? = nil) throws -> Dataset {
        let prefix = train ? "train" : "t10k"
        let img = "\(prefix)-images-idx3-ubyte"
        let lab = "\(prefix)-labels-idx1-ubyte"
        guard let imgPath = path(img, in: dir) else {
            throw DataError(file: "\(dir)/\(img)[.gz]", "no such file (run `nnd dataset fetch mnist --into \(dir)`)")
        }
        guard let labPath = path(lab, in: dir) else {
            throw DataError(file: "\(dir)/\(lab)[.gz]", "no such file (run `nnd dataset fetch mnist --into \(dir)`)")
        }
        return try IDXReader.loadPair(images: imgPath, labels: labPath, limit: limit)
    }

    /// `../shared/datasets/mnist` beside the checkout: looked for above the working directory
    /// and above the executable, so a clone next to `shared/` finds it without configuration.
    public static func sharedCopy() -> String? {
        var starts = [FileManager.default.currentDirectoryPath]
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            starts.append((exe as NSString).deletingLastPathComponent)
        }
        for start in starts {
            var dir = start
            for _ in 0..<8 {
                let candidate = "\(dir)/../shared/datasets/mnist"
                if path(files[0], in: candidate) != nil { return (candidate as NSString).standardizingPath }
                let parent = (dir as NSString).deletingLastPathComponent
                if parent == dir { break }
                dir = parent
            }
        }
        return nil
    }

    /// Verifies one file's decompressed content against the pinned hash.
    public static func verify(_ name: String, at path: String) throws {
        let content = try IDXReader.readFile(path)
        let got = SHA256.hex(content)
        guard got == contentSHA256[name] else {
            throw DataError(
                file: path, "content SHA-256 \(got) does not match the pinned \(contentSHA256[name] ?? "?")")
        }
    }

    /// Fills `into` with the four files, verified, from the first source that has all of them.
    /// Returns the source used; throws listing every source tried and why it failed.
    public static func fetch(into: String, from explicit: String?, log: (String) -> Void) throws -> String {
        do { try FileManager.default.createDirectory(atPath: into, withIntermediateDirectories: true) } catch {
            throw DataError(file: into, "cannot create the directory: \(DataError.reason(error))")
        }
        var sources: [String] = []
        if let explicit { sources.append(explicit) }
        if let env = ProcessInfo.processInfo.environment["NND_DATASET_MIRROR"], !env.isEmpty, env != explicit {
            sources.append(env)
        }
        if let shared = sharedCopy() { sources.append(shared) }
        sources += publicMirrors
        var failures: [String] = []
        for source in sources {
            do {
                for name in files {
                    let dest = "\(into)/\(name).gz"
                    if FileManager.default.fileExists(atPath: dest), (try? verify(name, at: dest)) != nil { continue }
                    let tmp = dest + ".part"
                    if source.hasPrefix("https://") || source.hasPrefix("http://") {
                        try download(URL(string: source + name + ".gz")!, to: tmp)
                    } else {
                        guard let src = path(name, in: source) else {
                            throw DataError(file: "\(source)/\(name)[.gz]", "no such file")
                        }
                        try? FileManager.default.removeItem(atPath: tmp)
                        try FileManager.default.copyItem(atPath: src, toPath: tmp)
                    }
                    do { try verify(name, at: tmp) } catch {
                        try? FileManager.default.removeItem(atPath: tmp)
                        throw error
                    }
                    // IDXReader reads both plain and gzip files, so the name keeps .gz only when it is one.
                    let isGz =
                        (try? FileHandle(forReadingFrom: URL(fileURLWithPath: tmp)).readData(ofLength: 2)).map {
                            [UInt8]($0) == [0x1f, 0x8b]
                        } ?? false
                    let final = isGz ? dest : "\(into)/\(name)"
                    try? FileManager.default.removeItem(atPath: final)
                    try FileManager.default.moveItem(atPath: tmp, toPath: final)
                }
                log("mnist: verified 4 files from \(source) into \(into)")
                return source
            } catch {
                let reason = error is DataError ? "\(error)" : DataError.reason(error)
                failures.append("  \(source): \(reason)")
                log("mnist: \(source) failed: \(reason)")
            }
        }
        throw DataError(file: into, "could not fetch MNIST; tried:\n" + failures.joined(separator: "\n"))
    }

    static func download(_ url: URL, to path: String) throws {
        final class Box: @unchecked Sendable {
            var data: Data?
            var error: Error?
        }  // written once before the semaphore signals
        let box = Box()
        let sem = DispatchSemaphore(value: 0)
        var req = URLRequest(url: url)
        req.timeoutInterval = 20
        URLSession.shared.dataTask(with: req) { data, response, error in
            if let error {
                box.error = error
            } else if let http = response as? HTTPURLResponse, http.statusCode != 200 {
                box.error = DataError(file: url.absoluteString, "HTTP \(http.statusCode)")
            } else {
                box.data = data
            }
            sem.signal()
        }.resume()
        sem.wait()
        if let e = box.error { throw DataError(file: url.absoluteString, "download failed: \(e.localizedDescription)") }
        guard let d = box.data else { throw DataError(file: url.absoluteString, "empty response") }
        try d.write(to: URL(fileURLWithPath: path))
    }
}
