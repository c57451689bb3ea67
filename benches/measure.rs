//! Latency samples, rates, process resources, and the Markdown report.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Latencies of one measured operation, and the wall time they took in all.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    latencies: Vec<Duration>,
    /// How many operations completed (may exceed the latencies kept).
    pub ops: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl Samples {
    /// Samples from latencies measured back to back over `elapsed`.
    pub fn new(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort();
        Samples {
            ops: latencies.len() as u64,
            latencies,
            elapsed,
        }
    }

    /// A rate only: `ops` operations in `elapsed`.
    pub fn rate(ops: u64, elapsed: Duration) -> Self {
        Samples {
            latencies: Vec::new(),
            ops,
            elapsed,
        }
    }

    /// The `q` quantile (0.0..=1.0) of the latencies.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        Some(self.latencies[i])
    }

    /// The latencies, sorted.
    pub fn latencies(&self) -> &[Duration] {
        &self.latencies
    }

    /// Operations per second over the run.
    pub fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Time `n` runs of `op`, one after the other.
pub async fn sequential<F, Fut>(n: usize, mut op: F) -> Samples
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        op(i).await;
        latencies.push(t.elapsed());
    }
    Samples::new(latencies, start.elapsed())
}

/// Time `n` runs of a synchronous `op`.
pub fn sequential_sync(n: usize, mut op: impl FnMut(usize)) -> Samples {
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        op(i);
        latencies.push(t.elapsed());
    }
    Samples::new(latencies, start.elapsed())
}

/// What a figure is compared with, and what it must reach.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// coordkit's rate at least this times the baseline's.
    RateAtLeast(f64),
    /// coordkit's p50 and p99 at most this times the baseline's.
    LatencyAtMost(f64),
    /// coordkit's p99 below this.
    P99Below(Duration),
    /// Lock handoffs: at least `of_uncontended` of coordkit's own uncontended
    /// rate (`share` measured); the ratio to the baseline is reported.
    Handoffs { of_uncontended: f64, share: f64 },
    /// Reported only.
    Report,
    /// Reported only, for rows that time single events (no rate): the ratio is
    /// coordkit's p50 over the baseline's, and no rate is shown.
    ReportLatency,
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Row {
    pub what: String,
    pub coord: Samples,
    pub baseline: Option<(String, Samples)>,
    pub target: Target,
    /// Extra facts (streams, memory, CPU).
    pub note: String,
}

impl Row {
    pub fn new(what: impl Into<String>, coord: Samples, target: Target) -> Self {
        Row {
            what: what.into(),
            coord,
            baseline: None,
            target,
            note: String::new(),
        }
    }

    pub fn against(mut self, name: impl Into<String>, baseline: Samples) -> Self {
        self.baseline = Some((name.into(), baseline));
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// The ratio the target speaks of, if there is one.
    pub fn ratio(&self) -> Option<f64> {
        let (_, base) = self.baseline.as_ref()?;
        match self.target {
            Target::LatencyAtMost(_) => {
                let p50 = ratio_of(self.coord.quantile(0.5)?, base.quantile(0.5)?);
                let p99 = ratio_of(self.coord.quantile(0.99)?, base.quantile(0.99)?);
                Some(p50.max(p99))
            }
            Target::ReportLatency => Some(ratio_of(self.coord.quantile(0.5)?, base.quantile(0.5)?)),
            _ => Some(self.coord.per_second() / base.per_second()),
        }
    }

    /// Whether the target is met (`None`: nothing to meet).
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::RateAtLeast(x) => Some(self.ratio()? >= x),
            Target::Handoffs {
                of_uncontended,
                share,
            } => Some(share >= of_uncontended),
            Target::LatencyAtMost(x) => Some(self.ratio()? <= x),
            Target::P99Below(limit) => Some(self.coord.quantile(0.99)? < limit),
            Target::Report | Target::ReportLatency => None,
        }
    }
}

fn ratio_of(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn latency(d: Option<Duration>) -> String {
    match d {
        None => "–".into(),
        Some(d) if d < Duration::from_micros(10) => format!("{} ns", d.as_nanos()),
        Some(d) if d < Duration::from_millis(10) => format!("{:.1} µs", d.as_secs_f64() * 1e6),
        Some(d) => format!("{:.2} ms", d.as_secs_f64() * 1e3),
    }
}

fn rate(s: &Samples) -> String {
    let r = s.per_second();
    if r >= 100_000.0 {
        format!("{:.2} M", r / 1e6)
    } else {
        format!("{r:.0}")
    }
}

/// The report as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| what | coord p50 | coord p99 | coord ops/s | baseline | base p50 | base p99 | base ops/s | ratio | target | met |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let timed = matches!(r.target, Target::ReportLatency);
        let rate = |s: &Samples| if timed { "–".into() } else { rate(s) };
        let (bname, bp50, bp99, brate) = match &r.baseline {
            Some((name, b)) => (
                name.clone(),
                latency(b.quantile(0.5)),
                latency(b.quantile(0.99)),
                rate(b),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        let target = match r.target {
            Target::RateAtLeast(x) => format!("rate ≥ {x}×"),
            Target::Handoffs { of_uncontended, .. } => {
                format!("≥ {:.0}% of uncontended", of_uncontended * 100.0)
            }
            Target::LatencyAtMost(x) => format!("p50, p99 ≤ {x}×"),
            Target::P99Below(d) => format!("p99 < {}", latency(Some(d))),
            Target::Report => "reported".into(),
            Target::ReportLatency => "reported (p50 ratio)".into(),
        };
        let met = match r.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let ratio = r.ratio().map_or("–".into(), |x| format!("{x:.2}×"));
        let what = if r.note.is_empty() {
            r.what.clone()
        } else {
            format!("{} ({})", r.what, r.note)
        };
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} | {bname} | {bp50} | {bp99} | {brate} | {ratio} | {target} | {met} |",
            latency(r.coord.quantile(0.5)),
            latency(r.coord.quantile(0.99)),
            rate(&r.coord),
        );
    }
    out
}

/// The global allocator of the bench binary: the system allocator, counting the
/// bytes live (one relaxed atomic add per allocation and free).
pub struct CountingAlloc;

static LIVE_HEAP: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counter
// only observes sizes.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_HEAP.fetch_add(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_HEAP.fetch_sub(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_HEAP.fetch_add(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE_HEAP.fetch_add(
            new as i64 - layout.size() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

/// Bytes live on the heap now, as [`CountingAlloc`] counts them (0 in a binary
/// that does not use it).
pub fn live_heap() -> i64 {
    LIVE_HEAP.load(std::sync::atomic::Ordering::Relaxed)
}

/// This process's resident memory, in bytes (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// CPU time this process has used, user + system (Linux).
pub fn cpu_time() -> Duration {
    process_cpu("self").unwrap_or_default()
}

/// CPU time process `pid` ("self" for this one) has used, user + system (Linux);
/// `None` if it cannot be read.
pub fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    let total = ticks(11)? + ticks(12)?;
    // The clock tick is 100 Hz on Linux.
    Some(Duration::from_millis(total * 10))
}

/// Time the threads of process `pid` ("self" for this one) have spent waiting for
/// a CPU while runnable (Linux schedstat, summed over its threads now alive).
pub fn run_queue_wait(pid: &str) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        // "<on cpu ns> <waiting ns> <timeslices>"
        total += stat
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Duration::from_nanos(total))
}

/// One process's CPU time and run-queue wait at a moment, or spent over a time.
#[derive(Clone, Copy, Default)]
struct Usage {
    cpu: Duration,
    waited: Duration,
}

impl Usage {
    fn of(pid: &str) -> Option<Usage> {
        Some(Usage {
            cpu: process_cpu(pid)?,
            waited: run_queue_wait(pid)?,
        })
    }

    fn since(self, before: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(before.cpu),
            waited: self.waited.saturating_sub(before.waited),
        }
    }

    fn plus(self, other: Usage) -> Usage {
        Usage {
            cpu: self.cpu + other.cpu,
            waited: self.waited + other.waited,
        }
    }
}

/// CPU used by this process and by etcd (its pid in `COORD_BENCH_ETCD_PID`, which
/// `scripts/bench.sh` sets) while counting (from [`CpuMeter::start`], or between
/// each [`CpuMeter::resume`] and [`CpuMeter::pause`]), and how long their threads
/// waited for a CPU. A process whose figures cannot be read is left out.
pub struct CpuMeter {
    etcd_pid: Option<String>,
    /// Spent by the client and etcd while counting, up to the last pause.
    spent: (Option<Usage>, Option<Usage>),
    /// The readings at the last resume, while counting.
    resumed: Option<(Option<Usage>, Option<Usage>)>,
}

impl CpuMeter {
    /// Start counting now.
    pub fn start() -> CpuMeter {
        let mut meter = CpuMeter::paused();
        meter.resume();
        meter
    }

    /// A meter that counts from its first [`CpuMeter::resume`].
    pub fn paused() -> CpuMeter {
        let etcd_pid = std::env::var("COORD_BENCH_ETCD_PID").ok();
        let etcd = etcd_pid.as_ref().map(|_| Usage::default());
        CpuMeter {
            etcd_pid,
            spent: (Some(Usage::default()), etcd),
            resumed: None,
        }
    }

    fn read(&self) -> (Option<Usage>, Option<Usage>) {
        (
            Usage::of("self"),
            self.etcd_pid.as_deref().and_then(Usage::of),
        )
    }

    /// Count from now (again).
    pub fn resume(&mut self) {
        if self.resumed.is_none() {
            self.resumed = Some(self.read());
        }
    }

    /// Stop counting until the next [`CpuMeter::resume`].
    pub fn pause(&mut self) {
        let Some((client_then, etcd_then)) = self.resumed.take() else {
            return;
        };
        let (client_now, etcd_now) = self.read();
        let add = |spent: Option<Usage>, now: Option<Usage>, then: Option<Usage>| {
            Some(spent?.plus(now?.since(then?)))
        };
        self.spent = (
            add(self.spent.0, client_now, client_then),
            add(self.spent.1, etcd_now, etcd_then),
        );
    }

    /// "CPU per op: client X ms, etcd Y ms; waiting for a CPU: …" over `ops`
    /// operations counted (counting stops here).
    pub fn per_op(&mut self, ops: u64) -> String {
        self.pause();
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / ops.max(1) as f64;
        match self.spent {
            (Some(c), Some(e)) => format!(
                "CPU per op: client {:.2} ms, etcd {:.2} ms; waiting for a CPU: client {:.2} ms, etcd {:.2} ms",
                ms(c.cpu),
                ms(e.cpu),
                ms(c.waited),
                ms(e.waited)
            ),
            (Some(c), None) => format!(
                "CPU per op: client {:.2} ms; waiting for a CPU: {:.2} ms",
                ms(c.cpu),
                ms(c.waited)
            ),
            _ => String::new(),
        }
    }
}
