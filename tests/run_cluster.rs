//! `run_cluster.sh` as a newcomer meets it: a bad argument gets one line and exit 2, a node
//! that refuses its arguments has its error shown (exit 2), and SIGTERM stops every process the
//! script started and says where the logs are. The script runs the binary under test
//! (`POLLEN_BIN`), so it builds nothing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn script() -> Command {
    let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/run_cluster.sh"));
    command.env("POLLEN_BIN", common::POLLEN);
    command
}

/// Runs the script (bounded: 60 s, then killed): (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = script()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, stdout, stderr) =
        common::finish_child(&mut child, Instant::now() + Duration::from_secs(60));
    if let Some(dir) = logs_dir(&stdout) {
        let _ = std::fs::remove_dir_all(dir);
    }
    (code, stdout, stderr)
}

/// The run folder a `logs: DIR` line names.
fn logs_dir(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("logs: "))
        .map(|rest| rest.split(' ').next().unwrap_or(rest).to_string())
}

#[test]
fn bad_arguments_get_one_line_and_exit_2() {
    for (args, needle) in [
        (&["gossip", "-n"][..], "-n needs a value"),
        (&["gossip", "--smoke"], "--smoke is for kv"),
        (
            &["lamport", "--duration", "abc"],
            "--duration takes seconds",
        ),
        (&["gossip", "--stagger", "x"], "--stagger takes seconds"),
        (&["frobnicate"], "unknown role"),
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_node_refusing_its_arguments_is_shown_and_exits_2() {
    let _serial = common::serial();
    let (code, stdout, stderr) = run(&["gossip", "-n", "2", "--", "--bogus"]);
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("node 0 exited with status 2: pollen: error: Unrecognized option: 'bogus'"),
        "{stderr}"
    );
}

/// A kv master refusing its arguments: its error is shown, the workers waiting for it are
/// stopped, and the script exits 2 (it used to wait for them forever).
#[test]
fn a_kv_master_refusing_its_arguments_ends_the_run_with_2() {
    let _serial = common::serial();
    for smoke in [false, true] {
        let mut args = vec!["kv", "-n", "2"];
        if smoke {
            args.push("--smoke");
        }
        args.extend(["--", "--replicas", "0"]);
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, Some(2), "smoke {smoke}: {stdout}\n{stderr}");
        assert!(stderr.contains("--replicas must be"), "{stderr}");
    }
}

#[test]
fn sigterm_stops_every_node_and_names_the_logs() {
    a_signal_stops_every_node_and_names_the_logs("-TERM", false);
}

/// Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the script, and
/// its nodes, which a non-interactive shell starts with SIGINT ignored. Only the script's trap
/// can stop them.
#[test]
fn ctrl_c_stops_every_node_and_names_the_logs() {
    a_signal_stops_every_node_and_names_the_logs("-INT", true);
}

/// Starts a kv cluster through the script, sends `signal` to the script (or, with
/// `to_group`, to its process group, as a terminal does), and checks that the script exits
/// 130 naming its run folder and that no process it started is left. Every wait is bounded:
/// on failure, the nodes still running are killed before the test fails.
fn a_signal_stops_every_node_and_names_the_logs(signal: &str, to_group: bool) {
    use std::os::unix::process::CommandExt;
    let _serial = common::serial();
    // A test started as a background job of a shell without job control inherits SIGINT
    // ignored, and a shell cannot trap a signal ignored on entry: `env` restores it.
    let mut child = Command::new("env")
        .arg("--default-signal=INT")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/run_cluster.sh"))
        .env("POLLEN_BIN", common::POLLEN)
        .args(["kv", "-n", "2"])
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut dir = None;
    while dir.is_none() {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the script ended early"
        );
        dir = logs_dir(&line);
    }
    let dir = dir.unwrap();
    // Its processes are the ones whose command line names the run folder.
    let running = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(&dir))
            })
            .collect()
    };
    let fail = |child: &mut std::process::Child, why: String| -> ! {
        let _ = child.kill();
        for pid in running() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        panic!("{why}");
    };
    let started = Instant::now();
    while running().len() < 3 {
        if started.elapsed() > Duration::from_secs(10) {
            fail(&mut child, "nodes did not start".to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let target = if to_group {
        format!("-{}", child.id())
    } else {
        child.id().to_string()
    };
    Command::new("kill")
        .args([signal, "--", &target])
        .status()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            fail(&mut child, format!("the script ignored {signal}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    if status.code() != Some(130) || !(stderr.contains("interrupted") && stderr.contains(&dir)) {
        fail(&mut child, format!("{status:?}: {stderr}"));
    }
    let started = Instant::now();
    while !running().is_empty() {
        if started.elapsed() > Duration::from_secs(5) {
            fail(&mut child, format!("left running: {:?}", running()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
