import Foundation
import NNAPI

/// Promoted models: `<state>/models/<name>/<version>/{model.safetensors,info.json}`, a
/// `current` symlink switched atomically (new link, rename over the old one, fsync of the
/// directory), and `promotions.json`, the stack of versions that were current (for rollback).
public struct ModelRegistry: Sendable {
    public let root: String
    public init(root: String) { self.root = root }

    public enum RegistryError: Error, CustomStringConvertible {
        case notFound(String)
        case conflict(String)
        case io(String)
        public var description: String {
            switch self {
            case .notFound(let m), .conflict(let m), .io(let m): m
            }
        }
    }

    func dir(_ model: String) -> String { "\(root)/\(model)" }

    /// Stores a checkpoint as a new (not yet current) version.
    public func add(
        model: String, run: String, checkpointBytes: [UInt8], testAccuracy: Double, trainAccuracy: Double,
        layers: [Int], activation: Activation, trainRecords: Int? = nil, dataFingerprint: String? = nil
    ) throws -> ModelVersion {
        let stamp = ISO8601DateFormatter.compact.string(from: Date())
        let v = ModelVersion(
            version: "\(stamp)-\(run.suffix(12))", run: run, testAccuracy: testAccuracy, trainAccuracy: trainAccuracy,
            createdAt: Date(),
            layers: layers, activation: activation, trainRecords: trainRecords, dataFingerprint: dataFingerprint)
        let vdir = "\(dir(model))/\(v.version)"
        do {
            try FileManager.default.createDirectory(atPath: vdir, withIntermediateDirectories: true)
            try CheckpointStore.atomicWrite(checkpointBytes, to: "\(vdir)/model.safetensors")
            try CheckpointStore.atomicWrite([UInt8](APIJSON.prettyEncoder.encode(v)), to: "\(vdir)/info.json")
        } catch { throw RegistryError.io("cannot store model \(model) version \(v.version): \(error)") }
        return v
    }

    public func current(_ model: String) -> ModelVersion? {
        guard let name = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(dir(model))/current") else {
            return nil
        }
        return version(model, (name as NSString).lastPathComponent)
    }

    public func version(_ model: String, _ version: String) -> ModelVersion? {
        guard let d = FileManager.default.contents(atPath: "\(dir(model))/\(version)/info.json") else { return nil }
        return try? APIJSON.decoder.decode(ModelVersion.self, from: d)
    }

    public func modelPath(_ model: String, _ version: String) -> String { "\(dir(model))/\(version)/model.safetensors" }

    public func load(_ model: String, _ version: String) throws -> Checkpoint {
        let path = modelPath(model, version)
        guard let d = FileManager.default.contents(atPath: path) else {
            throw RegistryError.notFound("\(path) is missing")
        }
        return try Checkpoint.decode([UInt8](d), path: path)
    }

    public func list() -> [ModelInfo] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted()
        return names.map { name in
            let entries = ((try? FileManager.default.contentsOfDirectory(atPath: dir(name))) ?? []).filter {
                $0 != "current" && !$0.hasPrefix(".")
            }
            // Oldest first by creation time (milliseconds): two versions stored within one second
            // have names that sort by their runs' ids, not by when they were made.
            let versions = entries.compactMap { version(name, $0) }.sorted {
                ($0.createdAt, $0.version) < ($1.createdAt, $1.version)
            }
            return ModelInfo(name: name, current: current(name)?.version, versions: versions)
        }
    }

    func stack(_ model: String) -> [String] {
        guard let d = FileManager.default.contents(atPath: "\(dir(model))/promotions.json") else { return [] }
        return (try? JSONDecoder().decode([String].self, from: d)) ?? []
    }

    /// Not found for a model no version was ever stored under (no directory), so that the
    /// message does not talk about the versions of a model that does not exist.
    public func requireModel(_ model: String) throws(RegistryError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir(model), isDirectory: &isDirectory), isDirectory.boolValue
        else {
            throw RegistryError.notFound("no model named \(model) (GET /v1/models lists them)")
        }
    }

    /// Makes `version` current.
    public func promote(model: String, version: String) throws {
        try requireModel(model)
        guard self.version(model, version) != nil else {
            throw RegistryError.notFound("model \(model) has no version \(version)")
        }
        var s = stack(model)
        if s.last != version { s.append(version) }
        try point(model: model, to: version, stack: s)
    }

    /// Makes the previously current version current again.
    @discardableResult
    public func rollback(model: String) throws -> String {
        try requireModel(model)
        var s = stack(model)
        guard s.count >= 2 else {
            throw RegistryError.conflict("model \(model) has no earlier version to roll back to")
        }
        s.removeLast()
        try point(model: model, to: s.last!, stack: s)
        return s.last!
    }

    /// Removes all but the newest `keep` versions of `model` (by creation time), never the
    /// current one nor the one `rollback` would return to; removed versions also leave the
    /// promotion stack, so a later rollback never points at a missing version. Returns the
    /// removed versions.
    @discardableResult
    public func prune(model: String, keep: Int) throws -> [String] {
        guard keep > 0, let info = list().first(where: { $0.name == model }) else { return [] }
        let history = stack(model)
        var protected = Set(history.suffix(2))
        if let current = info.current { protected.insert(current) }
        let newestFirst = info.versions.sorted { $0.createdAt > $1.createdAt }.map(\.version)
        let removed = newestFirst.dropFirst(keep).filter { !protected.contains($0) }
        guard !removed.isEmpty else { return [] }
        do {
            let remaining = history.filter { !removed.contains($0) }
            if remaining != history {
                try CheckpointStore.atomicWrite(
                    [UInt8](JSONEncoder().encode(remaining)), to: "\(dir(model))/promotions.json")
            }
            for version in removed { try FileManager.default.removeItem(atPath: "\(dir(model))/\(version)") }
        } catch { throw RegistryError.io("cannot remove old versions of model \(model): \(error)") }
        return Array(removed)
    }

    func point(model: String, to version: String, stack: [String]) throws {
        let d = dir(model)
        do {
            try CheckpointStore.atomicWrite([UInt8](JSONEncoder().encode(stack)), to: "\(d)/promotions.json")
            let tmp = "\(d)/.current-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createSymbolicLink(atPath: tmp, withDestinationPath: version)
            guard rename(tmp, "\(d)/current") == 0 else {
                unlink(tmp)
                throw RegistryError.io("rename: \(String(cString: strerror(errno)))")
            }
            let fd = open(d, O_RDONLY | O_DIRECTORY)
            if fd >= 0 {
                fsync(fd)
                close(fd)
            }
        } catch let e as RegistryError { throw e } catch {
            throw RegistryError.io("cannot switch \(model) to \(version): \(error)")
        }
    }

}

extension ISO8601DateFormatter {
    /// 20261129T021500Z: sortable and safe in a file name.
    static var compact: ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withYear, .withMonth, .withDay, .withTime, .withTimeZone]
        return f
    }
}
