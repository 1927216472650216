//! The bash and zsh completions and the man page (issue 16) against what `--help`
//! prints: every command and every flag `--help` shows, at every level, must be what
//! the completions offer there and what the man page lists, so a command added later
//! cannot be missing from them. The completions run in real shells.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// One command as `--help` describes it: its words, subcommands and flags.
#[derive(Debug)]
struct Help {
    path: Vec<String>,
    commands: BTreeSet<String>,
    flags: BTreeSet<String>,
}

/// The entries of a `--help` section (`Options:`, `Commands:`): the first column of
/// the lines indented by two spaces.
fn section(help: &str, title: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| {
            // `-c, --config  …`, or a long name that fills the column: `--name text`.
            let mut words = l.split_whitespace();
            let mut entry = words.next().unwrap().to_string();
            while entry.ends_with(',') {
                entry = format!("{entry} {}", words.next().unwrap());
            }
            entry
        })
        .collect()
}

/// Walks `--help` from the top, command by command.
fn help_tree() -> Vec<Help> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let run = run_delayqs(&args);
        assert!(run.status.success(), "{args:?}");
        let text = String::from_utf8(run.stdout).unwrap();
        let commands: BTreeSet<String> = section(&text, "Commands:").into_iter().collect();
        // `-c, --config`; argh's `help` alias of `--help` is not a flag.
        let flags = section(&text, "Options:")
            .iter()
            .flat_map(|e| e.split(", ").map(str::to_string).collect::<Vec<_>>())
            .filter(|f| f.starts_with('-'))
            .collect();
        for c in &commands {
            let mut p = path.clone();
            p.push(c.clone());
            todo.push(p);
        }
        out.push(Help {
            path,
            commands,
            flags,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    assert!(out.len() > 10, "{out:?}");
    out
}

fn generated(args: &[&str]) -> String {
    let out = run_delayqs(args);
    assert!(out.status.success(), "{args:?}");
    assert!(out.stderr.is_empty(), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn shell_word(w: &str) -> String {
    format!("'{}'", w.replace('\'', r"'\''"))
}

/// What bash's completion offers for the words `line` (the last one being completed),
/// run in `dir`.
fn bash_offers(script: &Path, dir: &Path, line: &[&str]) -> BTreeSet<String> {
    let words: Vec<String> = std::iter::once("delayqs")
        .chain(line.iter().copied())
        .map(shell_word)
        .collect();
    let program = format!(
        "source {}; COMP_WORDS=({}); COMP_CWORD={}; _delayqs; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        shell_word(script.to_str().unwrap()),
        words.join(" "),
        line.len()
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{line:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{line:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bash_completion_offers_every_command_and_flag_help_shows() {
    let dir = scratch_dir();
    let script = dir.join("delayqs.bash");
    fs::write(&script, generated(&["completions", "bash"])).unwrap();
    for h in help_tree() {
        let mut line: Vec<&str> = h.path.iter().map(String::as_str).collect();
        if !h.commands.is_empty() {
            line.push("");
            assert_eq!(
                bash_offers(&script, &dir, &line),
                h.commands,
                "{:?}",
                h.path
            );
            line.pop();
        }
        line.push("-");
        assert_eq!(bash_offers(&script, &dir, &line), h.flags, "{:?}", h.path);
    }
    // Prefixes narrow; a flag's value is not taken for a command; values by kind.
    assert_eq!(
        bash_offers(&script, &dir, &["st"]),
        set(&["start", "stats", "status", "stop"])
    );
    assert_eq!(
        bash_offers(&script, &dir, &["failed", "r"]),
        set(&["retry"])
    );
    assert_eq!(
        bash_offers(&script, &dir, &["add", "--callback", "run", "--me"]),
        set(&["--member", "--method"])
    );
    fs::write(dir.join("prod.json"), "{}").unwrap();
    assert_eq!(
        bash_offers(&script, &dir, &["pending", "--config", "pr"]),
        set(&["prod.json"])
    );
    assert_eq!(
        bash_offers(&script, &dir, &["stats", "-c", "pro"]),
        set(&["prod.json"])
    );
    assert_eq!(
        bash_offers(&script, &dir, &["add", "--method", ""]),
        set(&["POST", "PUT"])
    );
    assert_eq!(bash_offers(&script, &dir, &["add", "--body", ""]), set(&[]));
    assert_eq!(
        bash_offers(&script, &dir, &["completions", ""]),
        set(&["bash", "zsh"])
    );
    assert_eq!(bash_offers(&script, &dir, &["cancel", ""]), set(&[]));
    assert_eq!(
        bash_offers(&script, &dir, &["run", "--log-level", "d"]),
        set(&["debug"])
    );
}

/// What zsh's completion offers for `line`. The completion system's builtins
/// (`_describe`, `compadd`, `_files`) work only inside a completion widget, so here
/// they are shell functions that print what they were given.
fn zsh_offers(script: &Path, line: &[&str]) -> BTreeSet<String> {
    let words: Vec<String> = std::iter::once("delayqs")
        .chain(line.iter().copied())
        .map(shell_word)
        .collect();
    let program = format!(
        r#"_describe() {{ local entry; for entry in ${{(P)${{@[-1]}}}}; do print -r -- ${{entry%%:*}}; done }}
compadd() {{ if [[ $1 == -a ]]; then print -rl -- ${{(P)2}}; else [[ $1 == -- ]] && shift; print -rl -- "$@"; fi }}
_files() {{ print -r -- FILES }}
_message() {{ }}
words=({}); CURRENT={}; PREFIX={}
source {}"#,
        words.join(" "),
        line.len() + 1,
        shell_word(line.last().unwrap()),
        shell_word(script.to_str().unwrap()),
    );
    let out = Command::new("zsh")
        .args(["-f", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{line:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{line:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = line.last().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        // zsh narrows by the prefix itself; the stubs do not.
        .filter(|l| l.starts_with(prefix) || *l == "FILES")
        .map(str::to_string)
        .collect()
}

#[test]
fn zsh_completion_offers_every_command_and_flag_help_shows() {
    if Command::new("zsh").arg("--version").output().is_err() {
        // `make test` installs it (scripts/need.sh zsh zsh).
        eprintln!("zsh is not installed: its completion is not tried here");
        return;
    }
    let dir = scratch_dir();
    let script = dir.join("_delayqs");
    let text = generated(&["completions", "zsh"]);
    assert!(text.starts_with("#compdef delayqs\n"), "{text}");
    fs::write(&script, text).unwrap();
    let syntax = Command::new("zsh").arg("-n").arg(&script).output().unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    for h in help_tree() {
        let mut line: Vec<&str> = h.path.iter().map(String::as_str).collect();
        if !h.commands.is_empty() {
            line.push("");
            assert_eq!(zsh_offers(&script, &line), h.commands, "{:?}", h.path);
            line.pop();
        }
        line.push("-");
        assert_eq!(zsh_offers(&script, &line), h.flags, "{:?}", h.path);
    }
    assert_eq!(
        zsh_offers(&script, &["add", "--callback", "run", "--me"]),
        set(&["--member", "--method"])
    );
    assert_eq!(
        zsh_offers(&script, &["run", "--config", ""]),
        set(&["FILES"])
    );
    assert_eq!(
        zsh_offers(&script, &["add", "--content-type", ""]),
        set(&["form", "json"])
    );
    assert_eq!(
        zsh_offers(&script, &["completions", ""]),
        set(&["bash", "zsh"])
    );
}

#[test]
fn the_man_page_lists_every_command_and_flag_and_renders_cleanly() {
    let page = generated(&["man"]);
    assert!(page.contains(&format!("\"delayqs {}\"", env!("CARGO_PKG_VERSION"))));
    for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS"] {
        assert!(page.contains(&format!("\n.SH {section}\n")), "{section}");
    }
    // The text of each command's part: from its `.SS` to the next heading.
    let part = |path: &[String]| -> String {
        let heading = match path.is_empty() {
            true => "\n.SH OPTIONS\n".to_string(),
            false => format!("\n.SS {}\n", path.join(" ")),
        };
        let at = page
            .find(&heading)
            .unwrap_or_else(|| panic!("no {heading:?} in the man page"));
        let rest = &page[at + heading.len()..];
        rest[..rest.find("\n.S").unwrap_or(rest.len())].to_string()
    };
    for h in help_tree() {
        let text = part(&h.path);
        for flag in h
            .flags
            .iter()
            .filter(|f| *f != "--help" || h.path.is_empty())
        {
            let roff = format!("\\fB{}\\fR", flag.replace('-', "\\-"));
            assert!(text.contains(&roff), "{:?}: no {flag} in\n{text}", h.path);
        }
    }
    let dir = scratch_dir();
    let file = dir.join("delayqs.1");
    fs::write(&file, &page).unwrap();
    // groff's every warning on, output thrown away: only the warnings matter.
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&file)
        .output();
    match groff {
        Ok(out) => {
            assert!(out.status.success());
            assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warnings");
            let shown = Command::new("man")
                .arg("-l")
                .arg(&file)
                .env("MANWIDTH", "80")
                .env("MAN_KEEP_FORMATTING", "")
                .output()
                .unwrap();
            let shown = String::from_utf8_lossy(&shown.stdout);
            // man justifies lines: words may be two spaces apart.
            let words = shown.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(words.contains("delayqs failed retry"), "{shown}");
        }
        Err(_) => eprintln!("groff is not installed: the page is checked as text only"),
    }
}

#[test]
fn completions_for_an_unknown_shell_are_a_usage_error() {
    let out = run_delayqs(&["completions", "fish"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give bash or zsh"));
}
