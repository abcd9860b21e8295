//! What the viewer asked for, and the keys that change it: the sort, the
//! filter, the selected worker, the detail view. No terminal here: keys in,
//! state out, so every key is tested without one.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::SortKey;

/// The detail view of one worker's whole status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub id: String,
    /// The first wrapped line shown.
    pub scroll: usize,
}

/// What a key asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Redraw,
    Nothing,
}

#[derive(Debug, Clone)]
pub struct App {
    pub sort: SortKey,
    pub filter: String,
    /// The filter is being typed.
    pub editing: bool,
    /// The selected row, in the order shown.
    pub cursor: usize,
    /// The selected worker: the cursor follows it when rows move.
    pub selected: Option<String>,
    pub detail: Option<Detail>,
    /// The rows the table had room for at the last draw (for Page Up/Down).
    pub page: usize,
}

impl App {
    pub fn new(sort: SortKey) -> App {
        App {
            sort,
            filter: String::new(),
            editing: false,
            cursor: 0,
            selected: None,
            detail: None,
            page: 10,
        }
    }

    /// Puts the cursor on the selected worker in `shown` (the ids in the
    /// order shown), or keeps it in range when that worker is gone.
    pub fn follow(&mut self, shown: &[&str]) {
        if let Some(i) = self
            .selected
            .as_deref()
            .and_then(|id| shown.iter().position(|s| *s == id))
        {
            self.cursor = i;
        }
        self.cursor = self.cursor.min(shown.len().saturating_sub(1));
        self.selected = shown.get(self.cursor).map(|s| s.to_string());
    }

    /// Handles a key; `shown` are the ids in the order shown.
    pub fn key(&mut self, key: KeyEvent, shown: &[&str]) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Nothing;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c' | 'C')) {
            return Action::Quit;
        }
        if self.editing {
            return self.filter_key(key, shown);
        }
        if self.detail.is_some() {
            return self.detail_key(key);
        }
        match key.code {
            KeyCode::Char('q' | 'Q') => return Action::Quit,
            KeyCode::Char('a') => self.sort = SortKey::Age,
            KeyCode::Char('c') => self.sort = SortKey::Cpu,
            KeyCode::Char('m' | 'r') => self.sort = SortKey::Rss,
            KeyCode::Char('s') => self.sort = SortKey::Slot,
            KeyCode::Char('/') => self.editing = true,
            KeyCode::Esc if !self.filter.is_empty() => self.filter.clear(),
            KeyCode::Enter => match &self.selected {
                Some(id) => {
                    self.detail = Some(Detail {
                        id: id.clone(),
                        scroll: 0,
                    })
                }
                None => return Action::Nothing,
            },
            _ => return self.move_key(key, shown),
        }
        Action::Redraw
    }

    fn move_key(&mut self, key: KeyEvent, shown: &[&str]) -> Action {
        let last = shown.len().saturating_sub(1);
        let page = self.page.max(1);
        self.cursor = match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.cursor.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.cursor + 1,
            KeyCode::PageUp => self.cursor.saturating_sub(page),
            KeyCode::PageDown => self.cursor + page,
            KeyCode::Home | KeyCode::Char('g') => 0,
            KeyCode::End | KeyCode::Char('G') => last,
            _ => return Action::Nothing,
        }
        .min(last);
        self.selected = shown.get(self.cursor).map(|s| s.to_string());
        Action::Redraw
    }

    fn filter_key(&mut self, key: KeyEvent, shown: &[&str]) -> Action {
        match key.code {
            KeyCode::Enter => self.editing = false,
            KeyCode::Esc => {
                self.editing = false;
                self.filter.clear();
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) if !c.is_control() => self.filter.push(c),
            KeyCode::Up | KeyCode::Down | KeyCode::PageUp | KeyCode::PageDown => {
                return self.move_key(key, shown)
            }
            _ => return Action::Nothing,
        }
        Action::Redraw
    }

    fn detail_key(&mut self, key: KeyEvent) -> Action {
        let page = self.page.max(1);
        let Some(detail) = &mut self.detail else {
            return Action::Nothing;
        };
        match key.code {
            KeyCode::Char('q' | 'Q') => return Action::Quit,
            KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => self.detail = None,
            KeyCode::Up | KeyCode::Char('k') => detail.scroll = detail.scroll.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => detail.scroll += 1,
            KeyCode::PageUp => detail.scroll = detail.scroll.saturating_sub(page),
            KeyCode::PageDown | KeyCode::Char(' ') => detail.scroll += page,
            KeyCode::Home | KeyCode::Char('g') => detail.scroll = 0,
            // Clamped to the last page when drawn.
            KeyCode::End | KeyCode::Char('G') => detail.scroll = usize::MAX,
            _ => return Action::Nothing,
        }
        Action::Redraw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(app: &mut App, code: KeyCode, shown: &[&str]) -> Action {
        app.key(KeyEvent::new(code, KeyModifiers::NONE), shown)
    }

    #[test]
    fn sort_keys_and_quit_keys() {
        let mut app = App::new(SortKey::Slot);
        for (c, sort) in [
            ('c', SortKey::Cpu),
            ('m', SortKey::Rss),
            ('a', SortKey::Age),
            ('r', SortKey::Rss),
            ('s', SortKey::Slot),
        ] {
            assert_eq!(press(&mut app, KeyCode::Char(c), &[]), Action::Redraw);
            assert_eq!(app.sort, sort);
        }
        assert_eq!(press(&mut app, KeyCode::Char('q'), &[]), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        app.editing = true;
        assert_eq!(app.key(ctrl_c, &[]), Action::Quit);
    }

    #[test]
    fn the_filter_is_typed_after_a_slash_and_cleared_with_escape() {
        let mut app = App::new(SortKey::Slot);
        press(&mut app, KeyCode::Char('/'), &[]);
        for c in "GET q".chars() {
            press(&mut app, KeyCode::Char(c), &[]);
        }
        press(&mut app, KeyCode::Backspace, &[]);
        assert_eq!(app.filter, "GET ");
        assert!(app.editing, "q is typed, not a quit");
        press(&mut app, KeyCode::Enter, &[]);
        assert!(!app.editing);
        assert_eq!(app.filter, "GET ");
        press(&mut app, KeyCode::Esc, &[]);
        assert_eq!(app.filter, "");
    }

    #[test]
    fn the_cursor_moves_within_the_rows_and_follows_its_worker() {
        let mut app = App::new(SortKey::Slot);
        let shown = ["10", "11", "12", "13"];
        app.follow(&shown);
        assert_eq!(app.selected.as_deref(), Some("10"));
        press(&mut app, KeyCode::Down, &shown);
        press(&mut app, KeyCode::Down, &shown);
        assert_eq!(app.selected.as_deref(), Some("12"));
        press(&mut app, KeyCode::End, &shown);
        press(&mut app, KeyCode::Down, &shown);
        assert_eq!(app.cursor, 3);
        press(&mut app, KeyCode::Home, &shown);
        press(&mut app, KeyCode::Up, &shown);
        assert_eq!(app.cursor, 0);
        app.page = 2;
        press(&mut app, KeyCode::PageDown, &shown);
        assert_eq!(app.selected.as_deref(), Some("12"));
        // The rows reorder: the cursor stays on worker 12.
        app.follow(&["12", "13", "10"]);
        assert_eq!(app.cursor, 0);
        // Worker 12 is gone: the cursor stays in range.
        app.cursor = 5;
        app.follow(&["13"]);
        assert_eq!((app.cursor, app.selected.as_deref()), (0, Some("13")));
        app.follow(&[]);
        assert_eq!(app.selected, None);
    }

    #[test]
    fn enter_opens_the_selected_workers_detail_and_escape_closes_it() {
        let mut app = App::new(SortKey::Slot);
        assert_eq!(press(&mut app, KeyCode::Enter, &[]), Action::Nothing);
        let shown = ["7", "8"];
        app.follow(&shown);
        press(&mut app, KeyCode::Down, &shown);
        press(&mut app, KeyCode::Enter, &shown);
        assert_eq!(app.detail.as_ref().map(|d| d.id.as_str()), Some("8"));
        press(&mut app, KeyCode::Down, &shown);
        press(&mut app, KeyCode::Down, &shown);
        press(&mut app, KeyCode::Up, &shown);
        assert_eq!(app.detail.as_ref().unwrap().scroll, 1);
        assert_eq!(app.cursor, 1, "scrolling the detail moves no row");
        press(&mut app, KeyCode::Esc, &shown);
        assert_eq!(app.detail, None);
    }
}
