import Foundation
import Logging
import NNAPI
import NNCheckpoint
import NNData
import NNEngine
import NNNumerics
import NNTraining
import Synchronization

/// Owns every run: creates, queues, starts, pauses, resumes and stops them, persists their
/// records under `<state>/runs/<id>/run.json`, and picks up interrupted runs after a restart.
public actor RunManager {
    public let config: DaemonConfig
    public let hub = EventHub()
    let logger: Logger
    let notifier: SystemdNotifier?
    /// Every change to any record bumps `revision` (observer on the whole dictionary, so
    /// in-place element mutation counts too); `encodedStatus` is valid while it stays.
    var records: [String: RunRecord] = [:] { didSet { revision &+= 1 } }
    private var revision = 0
    /// Run records `recover` could not decode ("path: reason"); `GET /v1/health` names them.
    private(set) var unreadableRecords: [String] = []
    /// The JSON of `GET /v1/runs/ID` per run, with the revision and live progress it was made
    /// from. A status poll is the most frequent request, and encoding a run with a long epoch
    /// history cost ≈ 2.6 ms of CPU (15 KB) — taken from a training core on a busy machine.
    private var encodedStatus: [String: (revision: Int, progress: TrainingEvent?, json: Data)] = [:]
    var executions: [String: RunExecution] = [:]
    var shuttingDown = false
    public let datasets = DatasetCache()
    public let startedAt = Date()

    public let metrics: DaemonMetrics
    /// What the runs may hold together (`memory_budget`; by default the smaller of the cgroup's
    /// memory.max and MemAvailable when the daemon started).
    public let memoryBudget: Int

    public init(
        config: DaemonConfig, logger: Logger, notifier: SystemdNotifier? = nil, version: String = Daemon.version
    ) {
        self.metrics = DaemonMetrics(workers: config.workers, version: version)
        let usable = MemoryLimits.usable() ?? Int.max / 2
        self.memoryBudget = config.memoryBudget ?? Int(Double(usable) * (config.memoryBudgetFraction ?? 1))
        self.config = config
        self.logger = logger
        self.notifier = notifier
    }

    var runsDirectory: String { "\(config.stateDirectory)/runs" }
    public nonisolated var models: ModelRegistry { ModelRegistry(root: "\(config.stateDirectory)/models") }
    func runDirectory(_ id: String) -> String { "\(runsDirectory)/\(id)" }

    // MARK: - Start-up

    /// Loads persisted runs; runs that were running or queued when the daemon stopped (or
    /// was killed) go back to the queue and resume from their last good checkpoint.
    public func recover() {
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: runsDirectory)) ?? []
        for id in ids.sorted() where RunManager.isValidID(id) {
            let path = "\(runDirectory(id))/run.json"
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            do {
                var r = try APIJSON.decoder.decode(RunRecord.self, from: data)
                let crashes = r.startsSinceCheckpoint ?? 0
                if r.state == .running && !r.resumeOnStart && crashes >= config.quarantineAfterCrashes {
                    quarantine(&r, crashes: crashes)
                } else if r.state == .running || r.resumeOnStart || r.state == .queued {
                    if r.state == .running && !r.resumeOnStart {
                        r.notes.append(
                            "\(Self.timestamp()): daemon restarted after an unclean exit; resuming from the last good checkpoint"
                        )
                    }
                    r.state = .queued
                    r.resumeOnStart = false
                    persist(r)
                    logger.info("run will resume", metadata: ["run": "\(id)"])
                }
                records[id] = r
            } catch {
                let reason = Self.unreadableReason(error, data: data)
                logger.error("cannot read run record", metadata: ["file": "\(path)", "error": "\(reason)"])
                unreadableRecords.append("\(path): \(reason)")
            }
        }
        schedule()
    }

    /// Why a run record did not decode, in a line, as the API words a bad request body ("The
    /// given data was not valid JSON. (Unexpected end of file during JSON parse.)",
    /// "spec.model.layers is required"). The decoder does not say where the syntax broke; the
    /// parser, run again on `data`, does.
    static func unreadableReason(_ error: any Error, data: Data) -> String {
        guard let decoding = error as? DecodingError else { return "\(error)" }
        let message = APIRequestDecoder.apiError(decoding).message
        guard case .dataCorrupted(let context) = decoding, context.codingPath.isEmpty,
            context.underlyingError == nil
        else { return message }
        do { _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) } catch {
            if let detail = APIRequestDecoder.syntaxDetail(error) { return "\(message) (\(detail))" }
        }
        return message
    }

    /// A run during which the daemon died `crashes` times in a row without a new checkpoint:
    /// resuming it again would likely take the daemon (and every other run) down again.
    func quarantine(_ r: inout RunRecord, crashes: Int) {
        r.state = .failed
        r.finishedAt = Date()
        r.resumeOnStart = false
        r.reason =
            "the daemon exited \(crashes) times while this run trained, without a new checkpoint; "
            + "not resumed — nnctl resume to try again"
        r.notes.append("\(Self.timestamp()): \(r.reason!)")
        persist(r)
        metrics.runFailed(reason: r.reason!)
        logger.error("run quarantined", metadata: ["run": "\(r.id)", "reason": "\(r.reason!)"])
    }

    // MARK: - API operations

    /// A new queued run; refused when its estimated peak memory exceeds the whole budget
    /// (it could never start), before anything is allocated.
    public func create(spec: RunSpec, memory estimate: MemoryEstimate) throws(APIError) -> RunRecord {
        guard !shuttingDown else { throw APIError(503, "shutting_down", "the daemon is shutting down") }
        // The daemon opens the spec's files from its own working directory (`/` under systemd),
        // not the client's: a relative path would name another file than the one meant.
        if let (field, path) = spec.paths.first(where: { !$0.path.hasPrefix("/") }) {
            throw APIError(
                422, "invalid_spec",
                "\(field): '\(path)' is a relative path; the daemon needs an absolute one (it does not run in "
                    + "your working directory)", field: field)
        }
        // A missing launcher or a bad hostfile is refused now, not when the run is due at 2 a.m.
        if let d = spec.distributed { try DistributedLaunch.check(d) }
        guard estimate.bytes <= memoryBudget else {
            throw APIError(
                422, "insufficient_memory",
                "model.layers \(spec.model.layers) needs ≈ \(estimate) (parameters, gradients, optimiser state, "
                    + "batch buffers, data set); this daemon's budget is \(MemoryEstimate.format(memoryBudget)) "
                    + "(memory_budget)",
                field: "model.layers")
        }
        try checkStorage(for: spec, run: nil)
        let id = Self.newID(name: spec.name) {
            records[$0] != nil || FileManager.default.fileExists(atPath: runDirectory($0))
        }
        var r = RunRecord(id: id, spec: spec, workers: config.workers)
        r.memoryEstimateBytes = estimate.bytes
        do {
            try FileManager.default.createDirectory(atPath: runDirectory(id), withIntermediateDirectories: true)
        } catch {
            throw APIError(507, "storage", "cannot create \(runDirectory(id)): \(DataError.reason(error))")
        }
        records[id] = r
        persist(r)
        logger.info("run created", metadata: ["run": "\(id)", "spec": "\(spec.name)"])
        schedule()
        return records[id]!
    }

    public func list() -> [RunRecord] { records.values.sorted { $0.createdAt < $1.createdAt }.map(withLiveProgress) }

    public func get(_ key: String) throws(APIError) -> RunRecord { withLiveProgress(try find(key)) }

    /// `get` as the response body (JSON and a newline), re-encoded only when the record or its
    /// live progress (at most 5 times a second while training) changed since the last call.
    public func getEncoded(_ key: String) throws(APIError) -> Data {
        let r = try find(key)
        let live = hub.latestEvent(run: r.id)
        if let c = encodedStatus[r.id], c.revision == revision, c.progress == live { return c.json }
        var json: Data
        do { json = try APIJSON.encoder.encode(withLiveProgress(r)) } catch {
            throw APIError(500, "internal", "cannot encode run \(r.id): \(error)")
        }
        json.append(0x0A)
        if encodedStatus.count >= 64 { encodedStatus.removeAll(keepingCapacity: true) }  // bounded: polled runs only
        encodedStatus[r.id] = (revision, live, json)
        return json
    }

    func find(_ key: String) throws(APIError) -> RunRecord {
        if let r = records[key] { return r }
        if let r = records.values.filter({ $0.name == key }).max(by: { $0.createdAt < $1.createdAt }) { return r }
        throw APIError.notFound("no run with id or name '\(key.prefix(100))'")
    }

    func withLiveProgress(_ r: RunRecord) -> RunRecord {
        var r = r
        if let e = hub.latestEvent(run: r.id) { r.progress = e }
        return r
    }

    public func pause(_ key: String) throws(APIError) -> RunRecord {
        var r = try find(key)
        switch r.state {
        case .running: executions[r.id]?.flag.request(.pause)
        case .queued:
            r.state = .paused
            update(r, closeStreams: false)
        default: throw APIError.conflict("cannot pause run \(r.id): it is \(r.state.rawValue)")
        }
        return withLiveProgress(records[r.id]!)
    }

    public func stop(_ key: String) throws(APIError) -> RunRecord {
        var r = try find(key)
        switch r.state {
        case .running: executions[r.id]?.flag.request(.stop)
        case .queued, .paused:
            r.state = .stopped
            r.finishedAt = Date()
            update(r, closeStreams: true)
        default: throw APIError.conflict("cannot stop run \(r.id): it is \(r.state.rawValue)")
        }
        return withLiveProgress(records[r.id]!)
    }

    public func resume(_ key: String) throws(APIError) -> RunRecord {
        var r = try find(key)
        switch r.state {
        case .paused, .stopped, .failed:
            guard !shuttingDown else { throw APIError(503, "shutting_down", "the daemon is shutting down") }
            try checkStorage(for: r.spec, run: r.id)
            r.state = .queued
            r.reason = nil
            r.finishedAt = nil
            r.startsSinceCheckpoint = 0
            update(r, closeStreams: false)
            schedule()
        case .running where executions[r.id]?.flag.decision() == .pause:
            throw APIError.conflict("run \(r.id) is pausing; resume it once it is paused")
        default: throw APIError.conflict("cannot resume run \(r.id): it is \(r.state.rawValue)")
        }
        return withLiveProgress(records[r.id]!)
    }

    /// Latest good checkpoint of a run, for eval and export.
    public func latestCheckpoint(_ key: String) throws(APIError) -> (RunRecord, Checkpoint) {
        let r = try find(key)
        let store = CheckpointStore(directory: "\(runDirectory(r.id))/checkpoints", keep: r.spec.checkpoint.keep)
        guard let c = store.loadLatestValid().checkpoint else {
            throw APIError(409, "no_checkpoint", "run \(r.id) has no checkpoint yet")
        }
        return (r, c)
    }

    // MARK: - Scheduling

    /// Memory the running runs hold (their estimates).
    var memoryHeld: Int { executions.keys.compactMap { records[$0]?.memoryEstimateBytes }.reduce(0, +) }

    /// Starts queued runs, oldest first, while slots and memory allow. A run that does not fit
    /// next to the running ones waits for them; one that does not fit on its own fails.
    func schedule() {
        guard !shuttingDown else { return }
        while executions.count < config.maxConcurrentRuns,
            var next = records.values.filter({ $0.state == .queued }).min(by: { $0.createdAt < $1.createdAt })
        {
            let need = next.memoryEstimateBytes ?? 0
            if need > memoryBudget - memoryHeld {
                if !executions.isEmpty { break }
                next.state = .failed
                next.finishedAt = Date()
                next.reason =
                    "needs ≈ \(MemoryEstimate.format(need)) of memory; this daemon's budget is "
                    + "\(MemoryEstimate.format(memoryBudget)) (memory_budget)"
                metrics.runFailed(reason: next.reason!)
                logger.error("run refused", metadata: ["run": "\(next.id)", "reason": "\(next.reason!)"])
                update(next, closeStreams: true)
                continue
            }
            start(next)
        }
    }

    func start(_ record: RunRecord) {
        var r = record
        r.state = .running
        if r.startedAt == nil { r.startedAt = Date() }
        r.workers = config.workers
        // Durable before training begins: if the daemon dies before the next checkpoint, the
        // next start sees it (quarantine_after_crashes).
        r.startsSinceCheckpoint = (r.startsSinceCheckpoint ?? 0) + 1
        update(r, closeStreams: false)
        let exec = RunExecution(
            record: r, runDirectory: runDirectory(r.id), models: models, workers: config.workers, manager: self,
            hub: hub, metrics: metrics, datasets: datasets,
            dataDir: config.dataDirectory, logger: logger)
        executions[r.id] = exec
        logger.info("run started", metadata: ["run": "\(r.id)", "workers": "\(config.workers)"])
        exec.start()
    }

    // MARK: - Callbacks from executions

    func epochFinished(_ id: String, event: TrainingEvent, history: [EpochRecord]) {
        guard var r = records[id] else { return }
        r.progress = event
        r.history = history
        persist(r)
        records[id] = r
        let status = String(
            format: "run %@: epoch %d/%d, cost %.4f%@", r.name, event.epoch, event.epochs, event.cost ?? .nan,
            event.testAccuracy.map { String(format: ", test %.2f%%", $0) } ?? "")
        notifier?.status(status)
        logger.info(
            "epoch",
            metadata: [
                "run": "\(id)", "epoch": "\(event.epoch)/\(event.epochs)",
                "cost": "\(String(format: "%.6f", event.cost ?? .nan))",
                "lr": "\(event.learningRate)", "seconds": "\(String(format: "%.3f", event.seconds))",
                "samples_per_s": "\(Int(event.samplesPerSecond))",
                "test_accuracy": "\(event.testAccuracy.map { String(format: "%.2f", $0) } ?? "-")",
            ])
    }

    func checkpointWritten(_ id: String, path: String) {
        guard var r = records[id] else { return }
        r.lastCheckpoint = path
        r.checkpointsWritten += 1
        if r.startsSinceCheckpoint != 0 {
            r.startsSinceCheckpoint = 0
            persist(r)
        }
        records[id] = r
    }

    func noted(
        _ id: String, _ note: String, dataHash: String?, dataFiles: [String: String]? = nil, trainRecords: Int? = nil,
        dataFingerprint: String? = nil
    ) {
        guard var r = records[id] else { return }
        if let trainRecords { r.trainRecords = trainRecords }
        if let dataFingerprint { r.dataFingerprint = dataFingerprint }
        if !note.isEmpty { r.notes.append("\(Self.timestamp()): \(note)") }
        if let dataHash { r.dataHash = dataHash }
        if let dataFiles, r.dataFiles == nil { r.dataFiles = dataFiles }
        records[id] = r
        persist(r)
    }

    func executionEnded(
        _ id: String, result: Result<TrainingOutcome, Error>, history: [EpochRecord], accuracies: (Double, Double)?,
        promotion: PromotionOutcome? = nil
    ) {
        executions[id] = nil
        guard var r = records[id] else { return }
        r.history = history
        r.startsSinceCheckpoint = 0
        if let e = hub.latestEvent(run: id) { r.progress = e }
        switch result {
        case .success(.completed):
            r.state = .completed
            r.finishedAt = Date()
            r.reason = nil
            if let (tr, te) = accuracies {
                r.trainAccuracy = tr
                r.testAccuracy = te
            }
            if let promotion {
                r.promotion = promotion
                metrics.promotionDecided(promotion)
                r.notes.append("\(Self.timestamp()): \(promotion.message)")
                logger.notice(
                    "\(promotion.promoted ? "model promoted" : "model kept")",
                    metadata: [
                        "run": "\(id)", "model": "\(promotion.model)",
                        "version": "\(promotion.version)",
                        "new_test_accuracy": "\(String(format: "%.2f", promotion.newTestAccuracy))",
                        "current_test_accuracy":
                            "\(promotion.currentTestAccuracy.map { String(format: "%.2f", $0) } ?? "-")",
                    ])
            }
        case .success(.paused):
            r.state = .paused
            r.reason = nil
        case .success(.stopped):
            if shuttingDown {
                r.state = .queued
                r.resumeOnStart = true
                r.reason = "interrupted by daemon shutdown; resumes on next start"
            } else {
                r.state = .stopped
                r.finishedAt = Date()
            }
        case .failure(let error) where shuttingDown && error is DistributedRunError:
            // The job ended with the daemon (e.g. its launcher was signalled with it): it
            // resumes from its last checkpoint like any run the shutdown interrupted.
            r.state = .queued
            r.resumeOnStart = true
            r.reason = "interrupted by daemon shutdown (\(error)); resumes on next start"
        case .failure(let error):
            r.state = .failed
            r.finishedAt = Date()
            r.reason = "\(error)"
            metrics.runFailed(reason: r.reason!)
            logger.error("run failed", metadata: ["run": "\(id)", "reason": "\(error)"])
        }
        logger.info("run \(r.state.rawValue)", metadata: ["run": "\(id)"])
        update(r, closeStreams: r.state != .queued || shuttingDown)
        schedule()
    }

    func update(_ r: RunRecord, closeStreams: Bool) {
        records[r.id] = r
        persist(r)
        hub.publish(run: r.id, state: r.state, reason: r.reason, closeStreams: closeStreams)
    }

    func persist(_ r: RunRecord) {
        do {
            let data = try APIJSON.prettyEncoder.encode(r)
            try CheckpointStore.atomicWrite([UInt8](data), to: "\(runDirectory(r.id))/run.json")
        } catch {
            logger.error("cannot persist run record", metadata: ["run": "\(r.id)", "error": "\(error)"])
        }
    }

    // MARK: - Shutdown

    /// Stops every running run at its next step boundary (they checkpoint and are marked to
    /// resume on the next start) and waits for them, at most `timeout` seconds.
    public func shutdown(timeout: Double = 8) async {
        shuttingDown = true
        for e in executions.values { e.flag.request(.stop) }
        let deadline = Date().addingTimeInterval(timeout)
        while !executions.isEmpty && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        for id in executions.keys {  // did not stop in time: the last periodic checkpoint is what resumes
            if var r = records[id] {
                r.resumeOnStart = true
                r.state = .queued
                persist(r)
            }
        }
        hub.closeAll()
    }

    public func metricsText() -> String {
        let snapshot = DaemonMetrics.Snapshot(
            runs: records.values.sorted { $0.createdAt < $1.createdAt }, counts: counts(), models: models.list(),
            stateDirectoryBytes: stateDirectoryBytes(), stateFilesystem: stateFilesystem(), memoryBudget: memoryBudget,
            memoryHeld: memoryHeld, unreadableRunRecords: unreadableRecords.count)
        return metrics.render(snapshot) { hub.latestEvent(run: $0) }
    }

    /// What `GET /v1/health` reports.
    public func health(version: String) -> Health {
        let fileSystem = stateFilesystem()
        return Health(
            version: version, uptimeSeconds: Date().timeIntervalSince(startedAt),
            runs: Dictionary(uniqueKeysWithValues: counts().map { ($0.key.rawValue, $0.value) }),
            stateDirectoryBytes: stateDirectoryBytes(), memoryBudgetBytes: memoryBudget, memoryHeldBytes: memoryHeld,
            unreadableRunRecords: unreadableRecords.isEmpty ? nil : unreadableRecords,
            stateFilesystemAvailableBytes: fileSystem?.available, stateFilesystemSizeBytes: fileSystem?.size)
    }

    /// Refuses (507 insufficient_storage) a run, new or resumed, whose next checkpoint cannot be
    /// written: a checkpoint goes to a temporary file beside the previous one before it replaces
    /// it, so twice its size must be free. Without this a run on a full disk starts, trains until
    /// its first checkpoint and fails there; this says so at once, with both figures.
    func checkStorage(for spec: RunSpec, run: String?) throws(APIError) {
        let checkpoint = MemoryEstimate.checkpointBytes(spec: spec)
        guard let fileSystem = stateFilesystem(), fileSystem.available < 2 * checkpoint else { return }
        let format = MemoryEstimate.format
        throw APIError(
            507, "insufficient_storage",
            "\(run.map { "run \($0)" } ?? "this run")'s checkpoints take \(format(checkpoint)) each, written beside the "
                + "previous one (\(format(2 * checkpoint)) needed); the state directory's file system "
                + "(\(config.stateDirectory)) has \(format(fileSystem.available)) free: nnctl rm finished runs or free "
                + "space there")
    }

    /// The state directory's file system: bytes available to an unprivileged writer (the
    /// daemon runs as user nnd) and its size, from `statvfs` (one system call: every scrape and
    /// health poll asks afresh); nil if the call fails.
    func stateFilesystem() -> (available: Int, size: Int)? {
        var s = statvfs()
        guard statvfs(config.stateDirectory, &s) == 0 else { return nil }
        let unit = Int(s.f_frsize)
        return (Int(s.f_bavail) * unit, Int(s.f_blocks) * unit)
    }

    private var diskUsage: (measured: Date, bytes: Int)?

    /// Bytes under the state directory, measured at most every 10 s (health polls and scrapes
    /// must not walk the tree each time).
    func stateDirectoryBytes() -> Int {
        if let usage = diskUsage, Date().timeIntervalSince(usage.measured) < 10 { return usage.bytes }
        var total = 0
        if let walker = FileManager.default.enumerator(
            at: URL(fileURLWithPath: config.stateDirectory), includingPropertiesForKeys: [.fileSizeKey])
        {
            for case let url as URL in walker {
                total += (try? url.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0
            }
        }
        diskUsage = (Date(), total)
        return total
    }

    // MARK: - Removal and retention

    /// Removes a finished run with its checkpoints and metric series (`DELETE /v1/runs/{id}`).
    public func remove(_ key: String) throws(APIError) -> RunRecord {
        let r = try find(key)
        guard r.state == .completed || r.state == .stopped || r.state == .failed else {
            throw APIError.conflict(
                "cannot remove run \(r.id): it is \(r.state.rawValue); stop it first (nnctl stop \(r.id))")
        }
        try delete(r)
        logger.notice("run removed", metadata: ["run": "\(r.id)"])
        return r
    }

    private func delete(_ r: RunRecord) throws(APIError) {
        let directory = runDirectory(r.id)
        if FileManager.default.fileExists(atPath: directory) {
            do { try FileManager.default.removeItem(atPath: directory) } catch {
                throw APIError(507, "storage", "cannot remove \(directory): \(DataError.reason(error))")
            }
        }
        records[r.id] = nil
        encodedStatus[r.id] = nil
        hub.forget(run: r.id)
        diskUsage = nil
    }

    /// Removes finished runs past `keep_finished_runs_days` / `keep_finished_runs` and model
    /// versions past `keep_model_versions` (never a current one or a rollback target). Run at
    /// start and hourly; every removal is logged.
    public func applyRetention(now: Date = Date()) {
        let finished = records.values.filter { $0.state == .completed || $0.state == .stopped || $0.state == .failed }
            .sorted { ($0.finishedAt ?? $0.createdAt) > ($1.finishedAt ?? $1.createdAt) }
        var removed: [String] = []
        for (index, run) in finished.enumerated() {
            let age = now.timeIntervalSince(run.finishedAt ?? run.createdAt)
            let tooOld = config.keepFinishedRunsDays > 0 && age > Double(config.keepFinishedRunsDays) * 86400
            let beyondCount = config.keepFinishedRuns > 0 && index >= config.keepFinishedRuns
            guard tooOld || beyondCount else { continue }
            do {
                try delete(run)
                removed.append(run.id)
            } catch {
                logger.error(
                    "retention cannot remove run", metadata: ["run": "\(run.id)", "error": "\(error.message)"])
            }
        }
        if !removed.isEmpty {
            logger.notice(
                "retention removed finished runs",
                metadata: [
                    "count": "\(removed.count)", "runs": "\(removed.joined(separator: ","))",
                    "keep_finished_runs_days": "\(config.keepFinishedRunsDays)",
                    "keep_finished_runs": "\(config.keepFinishedRuns)",
                ])
        }
        for model in models.list() {
            do {
                let versions = try models.prune(model: model.name, keep: config.keepModelVersions)
                if !versions.isEmpty {
                    diskUsage = nil
                    logger.notice(
                        "retention removed model versions",
                        metadata: [
                            "model": "\(model.name)", "versions": "\(versions.joined(separator: ","))",
                            "keep_model_versions": "\(config.keepModelVersions)",
                        ])
                }
            } catch {
                logger.error("retention cannot prune model", metadata: ["model": "\(model.name)", "error": "\(error)"])
            }
        }
    }

    public func counts() -> [RunState: Int] {
        var c: [RunState: Int] = [:]
        for r in records.values { c[r.state, default: 0] += 1 }
        return c
    }

    // MARK: - Helpers

    static func isValidID(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 100 && !s.hasPrefix(".")
            && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
    }

    /// A new run's id: its name, the second in base 36 and 24 random bits, drawn again while
    /// `taken` says a run or a run directory has it. A script creating 250 runs of one name a
    /// second, as LoadTests does, draws the same 24 bits within a second about once in ten
    /// minutes; the id then named the other run's record and directory, and one run replaced
    /// the other (LoadTests saw it: 749 runs listed after 750 were created).
    static func newID(
        name: String, now: Date = Date(), random: () -> UInt32 = { UInt32.random(in: 0...0xFFFFFF) },
        taken: (String) -> Bool
    ) -> String {
        let prefix = "\(name.prefix(40))-\(String(Int(now.timeIntervalSince1970), radix: 36))"
        while true {
            let id = prefix + String(random(), radix: 16)
            if !taken(id) { return id }
        }
    }

    static func timestamp() -> String { ISO8601DateFormatter().string(from: Date()) }

}

/// Keeps the most recently loaded dataset so pause → resume does not read and hash it again.
/// A hit must have the same spec data section, the same shard files (a shard added since is a
/// reload: tonight's retrain must see it), the same `onlyShards` and files whose content has not
/// changed.
public final class DatasetCache: Sendable {
    private let cached = Mutex<(key: String, value: DataLoading.Loaded)?>(nil)
    public init() {}
    public func load(spec: RunSpec, dataDir: String?, onlyShards: Set<String>? = nil) throws -> DataLoading.Loaded {
        let shards = DataLoading.trainingShards(spec: spec, fallbackDataDir: dataDir).joined(separator: ",")
        let only = onlyShards.map { $0.sorted().joined(separator: ",") } ?? "all"
        let key =
            "\(spec.data)|\(dataDir ?? "")|\(spec.model.layers.first!)|\(spec.model.layers.last!)|\(shards)|\(only)"
        if let hit = cached.withLock({ $0?.key == key ? $0?.value : nil }) {
            // The files may have changed or vanished since: re-hash them (cheap next to parsing).
            if (try? DataLoading.hashFiles(hit.files)) == hit.fileHashes { return hit }
        }
        let loaded = try DataLoading.load(spec: spec, fallbackDataDir: dataDir, onlyShards: onlyShards)
        cached.withLock { $0 = (key, loaded) }
        return loaded
    }
}
