//! Drawing a frame with ratatui: the header, the table of workers (or why
//! the board cannot be read), the key line or the filter being typed, and
//! the detail view of one worker's whole status. Any size of terminal is
//! drawn without a panic: what does not fit is cut.

use std::borrow::Cow;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table, TableState, Wrap};

use super::app::App;
use super::model::{Frame, Row, State};
use super::plain;
use crate::scoreboard::Status;

/// Styles, or none of them when colours are off (`NO_COLOR`).
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub colors: bool,
}

impl Palette {
    fn fg(self, color: Color) -> Style {
        match self.colors {
            true => Style::default().fg(color),
            false => Style::default(),
        }
    }

    fn state(self, state: State) -> Style {
        self.fg(match state {
            State::Starting => Color::Cyan,
            State::Idle => Color::Green,
            State::Busy => Color::Yellow,
            State::Stuck => Color::Red,
            State::Unreadable => Color::Magenta,
        })
    }
}

/// Draws `frame` with the rows `shown` (indexes into its rows, in order).
pub fn draw(
    out: &mut ratatui::Frame,
    frame: &Frame,
    app: &mut App,
    shown: &[usize],
    table: &mut TableState,
    palette: Palette,
) {
    let mut header: Vec<Line> = plain::header(frame).into_iter().map(Line::from).collect();
    if let Some(master) = header.get_mut(1) {
        master.style = palette.fg(Color::Cyan);
    }
    header.push(Line::from(view_line(frame, app, shown.len())).style(palette.fg(Color::DarkGray)));
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Length(header.len() as u16),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(out.area());
    out.render_widget(Paragraph::new(header), top);
    out.render_widget(Paragraph::new(key_line(app)), bottom);
    if app.editing {
        let x = bottom
            .x
            .saturating_add(1 + app.filter.chars().count() as u16);
        if x < bottom.right() {
            out.set_cursor_position((x, bottom.y));
        }
    }
    if let Some(error) = &frame.error {
        let text = Paragraph::new(error.as_str())
            .style(palette.fg(Color::Red))
            .wrap(Wrap { trim: false });
        out.render_widget(text, middle);
        return;
    }
    match app.detail.clone() {
        Some(detail) => {
            let row = frame.rows.iter().find(|r| r.id == detail.id);
            draw_detail(out, middle, row, &detail.id, app, palette);
        }
        None => draw_table(out, middle, frame, app, shown, table, palette),
    }
}

/// `sort: slot` and the filter, with how many rows pass it.
fn view_line(frame: &Frame, app: &App, shown: usize) -> String {
    let mut line = format!("sort: {}", app.sort.as_str());
    if !app.filter.is_empty() || app.editing {
        line.push_str(&format!(
            "  filter: {:?} ({shown} of {})",
            app.filter,
            frame.rows.len()
        ));
    }
    line
}

fn key_line(app: &App) -> Line<'static> {
    if app.editing {
        return Line::from(format!("/{}", app.filter));
    }
    let text = match app.detail {
        Some(_) => "q quit  Esc/Enter back  Up/Down/PgUp/PgDn/Home/End scroll",
        None => "q quit  sort: a age, c cpu, m rss, s slot  / filter  Up/Down/PgUp/PgDn move  Enter status",
    };
    Line::from(Span::styled(
        text,
        Style::default().add_modifier(Modifier::DIM),
    ))
}

fn draw_table(
    out: &mut ratatui::Frame,
    area: Rect,
    frame: &Frame,
    app: &mut App,
    shown: &[usize],
    state: &mut TableState,
    palette: Palette,
) {
    let room = usize::from(area.height.saturating_sub(1));
    app.page = room;
    let widths = plain::WIDTHS
        .iter()
        .map(|&w| Constraint::Length(w as u16))
        .chain([Constraint::Fill(1)]);
    let titles = TableRow::new(plain::TITLES.iter().enumerate().map(|(i, &t)| right(i, t)))
        .style(Style::default().add_modifier(Modifier::BOLD));
    state.select((!shown.is_empty()).then_some(app.cursor));
    // Rows scrolled off the top come back when there is room for them
    // (a taller terminal, fewer rows); ratatui then keeps the cursor in view.
    let most = shown.len().saturating_sub(room);
    if state.offset() > most {
        *state.offset_mut() = most;
    }
    // ratatui builds every row it is given but shows at most `room` of
    // them, from the offset or as far as the cursor: it is given those, not
    // a thousand rows' cells per draw. Rows of one line each, it scrolls the
    // slice as it would scroll the whole table.
    let (offset, cursor) = (state.offset(), app.cursor);
    let first = offset.min(cursor);
    let end = (offset + room).max(cursor + 1).min(shown.len());
    let rows = shown[first..end]
        .iter()
        .map(|&i| table_row(&frame.rows[i], palette));
    let table = Table::new(rows, widths)
        .header(titles)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut window = TableState::new()
        .with_offset(offset - first)
        .with_selected(state.selected().map(|s| s - first));
    out.render_stateful_widget(table, area, &mut window);
    *state.offset_mut() = first + window.offset();
}

/// A cell right-aligned as in the plain table (all but STATE and STATUS).
fn right<'a>(column: usize, text: impl Into<Cow<'a, str>>) -> Cell<'a> {
    let line = Line::from(text.into());
    Cell::from(match column {
        2 | 7 => line,
        _ => line.right_aligned(),
    })
}

fn table_row(row: &Row, palette: Palette) -> TableRow<'static> {
    let cells = plain::cells(row);
    TableRow::new(cells.into_iter().enumerate().map(|(i, text)| {
        let cell = right(i, text);
        match i {
            2 => cell.style(palette.state(row.state)),
            _ => cell,
        }
    }))
}

/// The whole status of worker `id`, wrapped and scrolled; its lines as the
/// worker wrote them, each escaped.
fn draw_detail(
    out: &mut ratatui::Frame,
    area: Rect,
    row: Option<&Row>,
    id: &str,
    app: &mut App,
    palette: Palette,
) {
    let (title, lines) = match row {
        None => (
            format!(" worker {id} "),
            vec![format!("worker {id} is no longer on the board")],
        ),
        Some(row) => {
            let cells = plain::cells(row);
            let title = format!(
                " worker {id}, slot {}, {}, updated {} ago, {} ",
                cells[0],
                cells[2],
                cells[3],
                status_size(&row.status)
            );
            (title, status_lines(&row.status))
        }
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(palette.fg(Color::Blue));
    let inner = block.inner(area);
    app.page = usize::from(inner.height.max(1));
    let width = usize::from(inner.width.max(1));
    let wrapped: usize = lines
        .iter()
        .map(|l| l.chars().count().div_ceil(width).max(1))
        .sum();
    let detail = app.detail.as_mut().expect("drawn for a detail");
    detail.scroll = detail
        .scroll
        .min(wrapped.saturating_sub(usize::from(inner.height)));
    let text = Text::from(lines.into_iter().map(Line::from).collect::<Vec<_>>());
    let scroll = u16::try_from(detail.scroll).unwrap_or(u16::MAX);
    out.render_widget(
        Paragraph::new(text)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0)),
        area,
    );
}

fn status_size(status: &Status) -> String {
    match status.written() {
        Some(bytes) => format!("{} bytes", bytes.len()),
        None => "no status".into(),
    }
}

/// A status as lines: split where the worker wrote newlines, each escaped.
fn status_lines(status: &Status) -> Vec<String> {
    match status.written() {
        Some(bytes) => bytes
            .split(|&b| b == b'\n')
            .map(crate::render::escape)
            .collect(),
        None => vec![crate::render::status_cell(status)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::row;
    use crate::top::model::{visible, Counts, SortKey};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn frame() -> Frame {
        let mut long = b"BEGIN ".to_vec();
        for i in 0..60 {
            long.extend_from_slice(format!("word{i} ").as_bytes());
        }
        long.extend_from_slice(b"\nsecond line END");
        let rows = vec![
            row("4242", Some(0), b"_"),
            row("4243", Some(1), &long),
            row("77", None, b"perl \x1b[31m busy"),
        ];
        Frame {
            dir: "/run/board".into(),
            counts: Counts::of(&rows),
            rows,
            ..Frame::default()
        }
    }

    fn render(width: u16, height: u16, frame: &Frame, app: &mut App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let shown = visible(&frame.rows, app.sort, &app.filter);
        let ids: Vec<&str> = shown.iter().map(|&i| frame.rows[i].id.as_str()).collect();
        app.follow(&ids);
        let mut state = TableState::default();
        terminal
            .draw(|f| draw(f, frame, app, &shown, &mut state, Palette { colors: true }))
            .unwrap();
        let buffer = terminal.backend().buffer().clone();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn the_table_shows_every_worker_with_escaped_statuses() {
        let mut app = App::new(SortKey::Slot);
        let text = render(100, 12, &frame(), &mut app);
        assert!(text.contains("3 live worker(s): 1 idle, 2 busy"), "{text}");
        assert!(text.contains("SLOT"), "{text}");
        assert!(text.contains("4242 idle"), "{text}");
        assert!(text.contains("perl \\u{1b}[31m busy"), "{text}");
        assert!(text.contains("BEGIN word0"), "{text}");
        assert!(!text.contains("END"), "the long status is cut: {text}");
    }

    #[test]
    fn the_detail_view_wraps_the_whole_status() {
        let mut app = App::new(SortKey::Slot);
        app.selected = Some("4243".into());
        app.detail = Some(crate::top::app::Detail {
            id: "4243".into(),
            scroll: 0,
        });
        let text = render(80, 20, &frame(), &mut app);
        assert!(text.contains("worker 4243, slot 1"), "{text}");
        assert!(text.contains("second line END"), "{text}");
        // Scrolled past the end: clamped, the end still shown.
        app.detail.as_mut().unwrap().scroll = 1000;
        let text = render(80, 8, &frame(), &mut app);
        assert!(text.contains("second line END"), "{text}");
    }

    #[test]
    fn a_long_table_scrolls_as_ratatui_scrolls_all_of_its_rows() {
        let rows: Vec<Row> = (0..100)
            .map(|i| row(&(1000 + i).to_string(), Some(i), b"GET /"))
            .collect();
        let frame = Frame {
            dir: "/run/board".into(),
            counts: Counts::of(&rows),
            rows,
            ..Frame::default()
        };
        let shown: Vec<usize> = (0..frame.rows.len()).collect();
        let palette = Palette { colors: true };
        let mut app = App::new(SortKey::Slot);
        let (mut drawn, mut whole) = (TableState::default(), TableState::default());
        let moves = [
            (0, 12),
            (8, 12),
            (12, 12),
            (40, 12),
            (99, 12),
            (95, 12),
            (70, 12),
            (70, 40),
            (20, 5),
            (0, 2),
            (99, 1),
            (50, 200),
        ];
        for (cursor, height) in moves {
            app.cursor = cursor;
            let area = Rect::new(0, 0, 60, height);
            let mut terminal = Terminal::new(TestBackend::new(60, height)).unwrap();
            terminal
                .draw(|f| draw_table(f, area, &frame, &mut app, &shown, &mut drawn, palette))
                .unwrap();
            let ours = terminal.backend().buffer().clone();
            // The same table given every row, as ratatui draws it.
            whole.select(Some(cursor));
            let room = usize::from(height - 1);
            let most = shown.len().saturating_sub(room);
            if whole.offset() > most {
                *whole.offset_mut() = most;
            }
            let widths = plain::WIDTHS
                .iter()
                .map(|&w| Constraint::Length(w as u16))
                .chain([Constraint::Fill(1)]);
            let titles = TableRow::new(plain::TITLES.iter().enumerate().map(|(i, &t)| right(i, t)))
                .style(Style::default().add_modifier(Modifier::BOLD));
            let table = Table::new(frame.rows.iter().map(|r| table_row(r, palette)), widths)
                .header(titles)
                .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
            terminal
                .draw(|f| f.render_stateful_widget(table, area, &mut whole))
                .unwrap();
            assert_eq!(
                &ours,
                terminal.backend().buffer(),
                "cursor {cursor}, height {height}"
            );
            assert_eq!(
                drawn.offset(),
                whole.offset(),
                "cursor {cursor}, height {height}"
            );
        }
    }

    #[test]
    fn tiny_terminals_and_errors_draw_without_a_panic() {
        for (w, h) in [(20, 5), (1, 1), (0, 0), (5, 40), (200, 2)] {
            let mut app = App::new(SortKey::Slot);
            render(w, h, &frame(), &mut app);
            app.detail = Some(crate::top::app::Detail {
                id: "4243".into(),
                scroll: 3,
            });
            render(w, h, &frame(), &mut app);
            app.detail = None;
            app.editing = true;
            app.filter = "x".repeat(50);
            render(w, h, &frame(), &mut app);
        }
        let mut gone = frame();
        gone.error = Some("scoreboard /run/board is gone: No such file or directory".into());
        let text = render(80, 8, &gone, &mut App::new(SortKey::Slot));
        assert!(text.contains("is gone"), "{text}");
    }
}
