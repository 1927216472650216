//! Shell completions (bash, zsh) and the man page, made from the commands' own
//! definitions (`argh::ArgsInfo`, the data `--help` is printed from): a command or
//! flag added to `commands.rs` shows up in all three without anyone keeping them in
//! step by hand. `make install` writes their output where bash-completion, zsh and
//! man look.

use std::fmt::Write as _;
use std::process::ExitCode;

use argh::{CommandInfoWithArgs, FlagInfo, FlagInfoKind, Optionality};

use crate::cli::error::{EX_CANTCREAT, EX_CONFIG, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE, Error};

/// `delayqs completions SHELL`.
pub fn completions(info: &CommandInfoWithArgs, shell: &str) -> Result<ExitCode, Error> {
    let script = match shell {
        "bash" => bash(info),
        "zsh" => zsh(info),
        other => {
            return Err(Error::Usage(format!(
                "no completions for {other:?}: give bash or zsh"
            )));
        }
    };
    print!("{script}");
    Ok(ExitCode::SUCCESS)
}

/// `delayqs man`.
pub fn man(info: &CommandInfoWithArgs) -> Result<ExitCode, Error> {
    print!("{}", man_page(info));
    Ok(ExitCode::SUCCESS)
}

/// One command of the tree: its words after `delayqs` and its definition.
struct Node<'a> {
    path: Vec<&'a str>,
    info: &'a CommandInfoWithArgs,
}

impl Node<'_> {
    /// The name the completion functions know it by: `delayqs_failed_retry`.
    fn key(&self) -> String {
        std::iter::once("delayqs")
            .chain(self.path.iter().copied())
            .collect::<Vec<_>>()
            .join("_")
    }

    fn flags(&self) -> impl Iterator<Item = &FlagInfo<'static>> {
        self.info.flags.iter().filter(|f| !f.hidden)
    }

    /// `--config` and `-c`, for each flag that takes a value.
    fn value_flags(&self) -> Vec<String> {
        self.flags()
            .filter(|f| matches!(f.kind, FlagInfoKind::Option { .. }))
            .flat_map(|f| names(f))
            .collect()
    }

    /// What a positional argument may be, when the set is closed.
    fn positional_choices(&self) -> &'static [&'static str] {
        match self.path.as_slice() {
            ["completions"] => &["bash", "zsh"],
            _ => &[],
        }
    }
}

/// Every command, depth first, the top one (`delayqs` itself) first.
fn nodes(info: &CommandInfoWithArgs) -> Vec<Node<'_>> {
    fn walk<'a>(path: Vec<&'a str>, info: &'a CommandInfoWithArgs, out: &mut Vec<Node<'a>>) {
        out.push(Node {
            path: path.clone(),
            info,
        });
        for sub in &info.commands {
            let mut p = path.clone();
            p.push(sub.name);
            walk(p, &sub.command, out);
        }
    }
    let mut out = Vec::new();
    walk(Vec::new(), info, &mut out);
    out
}

/// A flag's spellings: `--config`, then `-c` when it has one.
fn names(f: &FlagInfo) -> Vec<String> {
    let mut n = vec![f.long.to_string()];
    n.extend(f.short.map(|c| format!("-{c}")));
    n
}

/// What a flag's value may be: a file, or one of a closed set; `None`: anything.
enum Value {
    File,
    OneOf(&'static [&'static str]),
}

fn value_of(long: &str) -> Option<Value> {
    match long {
        "--config" => Some(Value::File),
        "--log-level" => Some(Value::OneOf(&[
            "off", "error", "warn", "info", "debug", "trace",
        ])),
        "--method" => Some(Value::OneOf(&["POST", "PUT"])),
        "--content-type" => Some(Value::OneOf(&["form", "json"])),
        _ => None,
    }
}

/// Every value-taking flag of the tree, once, with what its value may be.
fn valued_flags<'a>(all: &'a [Node<'a>]) -> Vec<(&'a FlagInfo<'static>, Option<Value>)> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for f in all.iter().flat_map(|n| n.flags()) {
        if matches!(f.kind, FlagInfoKind::Option { .. }) && !seen.contains(&f.long) {
            seen.push(f.long);
            out.push((f, value_of(f.long)));
        }
    }
    out
}

fn bash(info: &CommandInfoWithArgs) -> String {
    let all = nodes(info);
    let mut s = String::from(
        r#"# bash completion for delayqs, made by `delayqs completions bash` from the
# definitions `delayqs --help` prints.

# Sets what may follow at the command $1 (delayqs, delayqs_failed, ...): its
# subcommands, its flags, the flags that take a value, its positional choices.
_delayqs_node() {
    case $1 in
"#,
    );
    for n in &all {
        let cmds: Vec<&str> = n.info.commands.iter().map(|c| c.name).collect();
        let opts: Vec<String> = n.flags().flat_map(names).collect();
        let _ = writeln!(
            s,
            "        {}) cmds='{}' opts='{}' values='{}' args='{}' ;;",
            n.key(),
            cmds.join(" "),
            opts.join(" "),
            n.value_flags().join(" "),
            n.positional_choices().join(" ")
        );
    }
    s.push_str(
        r#"        *) cmds='' opts='' values='' args='' ;;
    esac
}

_delayqs() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local node=delayqs cmds opts values args i w
    # The words before the cursor: a subcommand's name enters it, a flag that takes
    # a value skips that value.
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        _delayqs_node "$node"
        if [[ " $values " == *" $w "* ]]; then
            ((i++))
        elif [[ " $cmds " == *" $w "* ]]; then
            node=${node}_$w
        fi
    done
    _delayqs_node "$node"
    if [[ " $values " == *" $prev "* ]]; then
        case $prev in
"#,
    );
    for (f, value) in valued_flags(&all) {
        let pattern = names(f).join("|");
        match value {
            Some(Value::File) => {
                let _ = writeln!(
                    s,
                    "            {pattern}) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- \"$cur\")) ;;"
                );
            }
            Some(Value::OneOf(choices)) => {
                let _ = writeln!(
                    s,
                    "            {pattern}) COMPREPLY=($(compgen -W '{}' -- \"$cur\")) ;;",
                    choices.join(" ")
                );
            }
            None => {}
        }
    }
    s.push_str(
        r#"            *) COMPREPLY=() ;;
        esac
    elif [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ -n $cmds ]]; then
        COMPREPLY=($(compgen -W "$cmds" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$args" -- "$cur"))
    fi
}

complete -F _delayqs delayqs
"#,
    );
    s
}

/// A single-quoted zsh word.
fn zsh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A `name:description` entry for `_describe`: colons in the name escaped, the
/// description on one line.
fn describe_entry(name: &str, description: &str) -> String {
    let line = description.split_whitespace().collect::<Vec<_>>().join(" ");
    zsh_quote(&format!("{}:{line}", name.replace(':', "\\:")))
}

fn zsh(info: &CommandInfoWithArgs) -> String {
    let all = nodes(info);
    let mut s = String::from(
        r#"#compdef delayqs
# zsh completion for delayqs, made by `delayqs completions zsh` from the
# definitions `delayqs --help` prints.

# Sets what may follow at the command $1 (delayqs, delayqs_failed, ...): its
# subcommands and flags (name:description), the flags that take a value, its
# positional choices.
_delayqs_node() {
    case $1 in
"#,
    );
    for n in &all {
        let cmds: Vec<String> = n
            .info
            .commands
            .iter()
            .map(|c| describe_entry(c.name, first_sentence(c.command.description)))
            .collect();
        let opts: Vec<String> = n
            .flags()
            .flat_map(|f| {
                names(f)
                    .into_iter()
                    .map(|name| describe_entry(&name, f.description))
            })
            .collect();
        let values: Vec<String> = n.value_flags().iter().map(|v| zsh_quote(v)).collect();
        let args: Vec<String> = n
            .positional_choices()
            .iter()
            .map(|a| zsh_quote(a))
            .collect();
        let _ = writeln!(
            s,
            "        {})\n            cmds=({})\n            opts=({})\n            values=({})\n            args=({}) ;;",
            n.key(),
            cmds.join(" "),
            opts.join(" "),
            values.join(" "),
            args.join(" ")
        );
    }
    s.push_str(
        r#"        *) cmds=() opts=() values=() args=() ;;
    esac
}

_delayqs() {
    # Not `path`: in zsh that is $PATH as an array.
    local node=delayqs w i prev=${words[CURRENT-1]}
    local -a cmds opts values args
    # The words before the cursor: a subcommand's name enters it, a flag that takes
    # a value skips that value.
    for ((i = 2; i < CURRENT; i++)); do
        w=${words[i]}
        _delayqs_node $node
        if (( ${values[(Ie)$w]} )); then
            (( i++ ))
        elif (( ${cmds[(I)${(b)w}:*]} )); then
            node=${node}_$w
        fi
    done
    _delayqs_node $node
    if (( ${values[(Ie)$prev]} )); then
        case $prev in
"#,
    );
    for (f, value) in valued_flags(&all) {
        let pattern = names(f).join("|");
        match value {
            Some(Value::File) => {
                let _ = writeln!(s, "            {pattern}) _files ;;");
            }
            Some(Value::OneOf(choices)) => {
                let _ = writeln!(
                    s,
                    "            {pattern}) compadd -- {} ;;",
                    choices.join(" ")
                );
            }
            None => {}
        }
    }
    s.push_str(
        r#"            *) _message 'a value' ;;
        esac
    elif [[ $PREFIX == -* ]]; then
        _describe -t options option opts
    elif (( $#cmds )); then
        _describe -t commands command cmds
    elif (( $#args )); then
        compadd -a args
    fi
}

_delayqs "$@"
"#,
    );
    s
}

/// The first sentence of a description (up to `.`, `;` or `:` followed by a space),
/// for a listing.
fn first_sentence(text: &str) -> &str {
    let text = text.trim();
    [". ", "; ", ": "]
        .iter()
        .filter_map(|end| text.find(end))
        .min()
        .map_or(text.trim_end_matches('.'), |at| &text[..at])
}

/// Text as roff prints it: backslashes and hyphens escaped, and no line starting
/// with a control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    escaped
        .lines()
        .map(|l| match l.starts_with(['.', '\'']) {
            true => format!("\\&{l}"),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `[--config <config>] [--check]`, as a roff line.
fn synopsis(info: &CommandInfoWithArgs) -> String {
    let mut parts = Vec::new();
    for f in info
        .flags
        .iter()
        .filter(|f| !f.hidden && f.long != "--help")
    {
        let mut part = format!("\\fB{}\\fR", roff(f.long));
        if let FlagInfoKind::Option { arg_name } = f.kind {
            let _ = write!(part, " \\fI{}\\fR", roff(arg_name));
        }
        parts.push(match f.optionality {
            Optionality::Required => part,
            Optionality::Repeating => format!("[{part}]..."),
            _ => format!("[{part}]"),
        });
    }
    for p in info.positionals.iter().filter(|p| !p.hidden) {
        let name = format!("\\fI{}\\fR", roff(p.name));
        parts.push(match p.optionality {
            Optionality::Required => name,
            Optionality::Optional => format!("[{name}]"),
            _ => format!("[{name}...]"),
        });
    }
    if !info.commands.is_empty() {
        parts.push("\\fIcommand\\fR".into());
    }
    parts.join(" ")
}

/// Flags and positionals as a `.TP` list; `--help` only where `top` (it is the same
/// everywhere).
fn arguments(out: &mut String, info: &CommandInfoWithArgs, top: bool) {
    let listed = |f: &&FlagInfo| !f.hidden && (top || f.long != "--help");
    for f in info.flags.iter().filter(listed) {
        let spellings: Vec<String> = names(f)
            .iter()
            .map(|n| format!("\\fB{}\\fR", roff(n)))
            .collect();
        let value = match f.kind {
            FlagInfoKind::Option { arg_name } => format!(" \\fI{}\\fR", roff(arg_name)),
            FlagInfoKind::Switch => String::new(),
        };
        let _ = writeln!(
            out,
            ".TP\n{}{value}\n{}",
            spellings.join(", "),
            roff(f.description)
        );
    }
    for p in info.positionals.iter().filter(|p| !p.hidden) {
        let _ = writeln!(
            out,
            ".TP\n\\fI{}\\fR\n{}",
            roff(p.name),
            roff(p.description)
        );
    }
}

fn man_page(info: &CommandInfoWithArgs) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let mut s = String::new();
    let _ = writeln!(
        s,
        ".\\\" delayqs(1), made by `delayqs man` from the definitions `delayqs --help` prints.\n.TH DELAYQS 1 \"\" \"delayqs {version}\" \"User Commands\"\n.SH NAME\ndelayqs \\- delayed HTTP callbacks out of Redis sorted sets\n.SH SYNOPSIS\n.B delayqs\n{}\n.SH DESCRIPTION\n{}\n.SH OPTIONS",
        synopsis(info),
        roff(info.description.trim())
    );
    arguments(&mut s, info, true);
    s.push_str(".SH COMMANDS\n");
    for n in nodes(info).iter().skip(1) {
        let _ = writeln!(
            s,
            ".SS {}\n.B delayqs {}\n{}\n.PP\n{}",
            roff(&n.path.join(" ")),
            roff(&n.path.join(" ")),
            synopsis(n.info),
            roff(n.info.description.trim())
        );
        arguments(&mut s, n.info, false);
    }
    let codes = [
        (0, "success; for \\fBstatus\\fR, the daemon runs"),
        (
            1,
            "already running (\\fBstart\\fR), not stopped in time (\\fBstop\\fR), or, for \\fBstatus\\fR, dead with its pid file left",
        ),
        (3, "for \\fBstatus\\fR: stopped"),
        (
            EX_USAGE.into(),
            "bad usage: an unknown command or option, a bad argument, an id not found",
        ),
        (EX_UNAVAILABLE.into(), "Redis could not be reached"),
        (
            EX_CANTCREAT.into(),
            "the pid file or the log files cannot be written",
        ),
        (
            EX_TEMPFAIL.into(),
            "some outcomes could not be written before exit; those jobs run again when their leases expire",
        ),
        (
            EX_CONFIG.into(),
            "bad config, a path the daemon cannot write (\\fBmetricsFile\\fR, \\fBlogDir\\fR), a key of the wrong type in Redis, or an evicting maxmemory\\-policy",
        ),
    ];
    s.push_str(".SH EXIT STATUS\n");
    for (code, what) in codes {
        let _ = writeln!(s, ".TP\n.B {code}\n{what}");
    }
    s.push_str(
        r#".SH ENVIRONMENT
.TP
.B DELAYQS_CONFIG
the config file, when \fB\-\-config\fR is not given
.SH FILES
.TP
.I config/config.json
tried first, relative to the current directory
.TP
.I /etc/delayqs/config.json
tried next; \fBmake install\fR puts the example config there
.SH SIGNALS
SIGTERM, SIGINT and SIGQUIT stop the daemon cleanly (a second one exits at once);
SIGHUP reloads the config; SIGUSR1 reopens the log files.
.SH SEE ALSO
README.md (the config keys and the job format), PROTOCOL.md, ARCHITECTURE.md
"#,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_text_cannot_start_a_request_or_an_escape() {
        assert_eq!(roff(".x\n'y\na\\b --c"), "\\&.x\n\\&'y\na\\eb \\-\\-c");
    }

    #[test]
    fn first_sentences() {
        assert_eq!(first_sentence("Run it. Then more."), "Run it");
        assert_eq!(first_sentence("Say so: 0 or 3."), "Say so");
        assert_eq!(first_sentence("Only one."), "Only one");
    }
}
