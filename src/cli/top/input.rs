//! Keys: the bytes a terminal sends, and what each key does in each mode. Pure, so
//! that every binding is tested without a terminal.

/// One key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Up,
    Down,
    PageUp,
    PageDown,
    Enter,
    Esc,
    Backspace,
    Tab,
    CtrlC,
}

/// Splits what one read returned into keys. An ESC alone is the Esc key (a terminal
/// sends an arrow's sequence in one write); a sequence not known is skipped whole.
pub fn keys(bytes: &[u8]) -> Vec<Key> {
    let mut out = Vec::new();
    let text = String::from_utf8_lossy(bytes);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let key = match c {
            '\x1b' => match chars.peek() {
                None => Key::Esc,
                Some('[') | Some('O') => {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    let mut params = String::new();
                    let mut last = None;
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            last = Some(c);
                            break;
                        }
                        params.push(c);
                    }
                    match (last, params.as_str()) {
                        (Some('A'), _) => Key::Up,
                        (Some('B'), _) => Key::Down,
                        (Some('~'), "5") => Key::PageUp,
                        (Some('~'), "6") => Key::PageDown,
                        _ => continue,
                    }
                }
                // Alt+key, or Esc typed quickly before a key: Esc.
                Some(_) => Key::Esc,
            },
            '\r' | '\n' => Key::Enter,
            '\t' => Key::Tab,
            '\x7f' | '\x08' => Key::Backspace,
            '\x03' => Key::CtrlC,
            c if c.is_control() => continue,
            c => Key::Char(c),
        };
        out.push(key);
    }
    out
}

/// What the view is doing with the keyboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The live view; keys are commands.
    Watch,
    /// Typing an id prefix after `/`.
    Find(String),
    /// Showing a lookup's or an action's long answer until Esc or `q`.
    Answer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Pause the queue, or resume it when paused.
    TogglePause,
    /// Retry the selected failed record.
    Retry,
    /// Move the selection to the other table (the failures, the hosts).
    SwitchTable,
    /// Pause the selected host or flow, or resume it when paused.
    ToggleHost,
    Up,
    Down,
    PageUp,
    PageDown,
    /// Start typing an id prefix.
    StartFind,
    /// The prefix typed so far changed.
    Typed(String),
    /// Look the job up.
    Find(String),
    /// Back to the live view.
    Back,
    Nothing,
}

pub fn action(mode: &Mode, key: Key) -> Action {
    if key == Key::CtrlC {
        return Action::Quit;
    }
    match mode {
        Mode::Watch => match key {
            Key::Char('q') | Key::Esc => Action::Quit,
            Key::Char('p') => Action::TogglePause,
            Key::Char('r') => Action::Retry,
            Key::Tab => Action::SwitchTable,
            Key::Char('h') => Action::ToggleHost,
            Key::Char('/') => Action::StartFind,
            Key::Up | Key::Char('k') => Action::Up,
            Key::Down | Key::Char('j') => Action::Down,
            Key::PageUp => Action::PageUp,
            Key::PageDown => Action::PageDown,
            _ => Action::Nothing,
        },
        Mode::Find(typed) => match key {
            Key::Esc => Action::Back,
            Key::Enter => Action::Find(typed.clone()),
            Key::Backspace => {
                let mut t = typed.clone();
                t.pop();
                Action::Typed(t)
            }
            // Ids are hex; anything else typed would only make the lookup refuse.
            Key::Char(c) if c.is_ascii_hexdigit() && typed.len() < 40 => {
                Action::Typed(format!("{typed}{}", c.to_ascii_lowercase()))
            }
            _ => Action::Nothing,
        },
        Mode::Answer => match key {
            Key::Esc | Key::Char('q') | Key::Enter => Action::Back,
            _ => Action::Nothing,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_become_keys() {
        assert_eq!(keys(b"q"), [Key::Char('q')]);
        assert_eq!(keys(b"\x1b"), [Key::Esc]);
        assert_eq!(keys(b"\x1b[A\x1b[B\x1bOA"), [Key::Up, Key::Down, Key::Up]);
        assert_eq!(keys(b"\x1b[5~\x1b[6~"), [Key::PageUp, Key::PageDown]);
        assert_eq!(
            keys(b"\x1b[1;5C/"),
            [Key::Char('/')],
            "unknown sequence skipped"
        );
        assert_eq!(
            keys(b"\x03\r\x7f\t"),
            [Key::CtrlC, Key::Enter, Key::Backspace, Key::Tab]
        );
    }

    #[test]
    fn what_keys_do_in_each_mode() {
        let watch = Mode::Watch;
        assert_eq!(action(&watch, Key::Char('q')), Action::Quit);
        assert_eq!(action(&watch, Key::Esc), Action::Quit);
        assert_eq!(action(&watch, Key::Char('p')), Action::TogglePause);
        assert_eq!(action(&watch, Key::Char('r')), Action::Retry);
        assert_eq!(action(&watch, Key::Char('/')), Action::StartFind);
        assert_eq!(action(&watch, Key::Down), Action::Down);
        assert_eq!(action(&watch, Key::Tab), Action::SwitchTable);
        assert_eq!(action(&watch, Key::Char('h')), Action::ToggleHost);
        let find = Mode::Find("ab".into());
        assert_eq!(action(&find, Key::Char('C')), Action::Typed("abc".into()));
        assert_eq!(action(&find, Key::Char('x')), Action::Nothing);
        assert_eq!(action(&find, Key::Tab), Action::Nothing);
        assert_eq!(
            action(&find, Key::Char('h')),
            Action::Nothing,
            "h is not hex: neither typed nor a pause"
        );
        assert_eq!(
            action(&find, Key::Char('q')),
            Action::Nothing,
            "q is typed, not quit"
        );
        assert_eq!(action(&find, Key::Backspace), Action::Typed("a".into()));
        assert_eq!(action(&find, Key::Enter), Action::Find("ab".into()));
        assert_eq!(action(&find, Key::Esc), Action::Back);
        assert_eq!(action(&Mode::Answer, Key::Esc), Action::Back);
        assert_eq!(action(&Mode::Answer, Key::Char('h')), Action::Nothing);
        for mode in [watch, find, Mode::Answer] {
            assert_eq!(action(&mode, Key::CtrlC), Action::Quit);
        }
    }
}
