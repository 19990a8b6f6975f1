//! The plain description of one chart — [`Figure`] with its [`Series`] (points in data units, a
//! [`Style`] and an optional legend entry) and [`RefLine`]s — and the colours series are drawn in.
//! Builders fill it in ([`super::ablation`]), `draw` renders it; it holds no plotters
//! types, so figures can be built and inspected without drawing anything.

/// Distinct colours (Tableau 10 without its grey, which is kept for reference lines).
pub const PALETTE: [(u8, u8, u8); 9] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
];
/// Reference lines and the keys of the λ_min floor.
pub(crate) const GREY: (u8, u8, u8) = (110, 110, 110);
/// Keys that explain a line style rather than a run.
pub(crate) const BLACK_RGB: (u8, u8, u8) = (0, 0, 0);

/// Colour `i` of the palette (cycling).
pub fn palette(i: usize) -> (u8, u8, u8) {
    PALETTE[i % PALETTE.len()]
}

/// A marker shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Circle,
    Cross,
    Triangle,
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Line,
    Dashed,
    /// A line with a marker at every point.
    LineMarks(Mark),
    /// Markers only.
    Marks(Mark),
}

/// One drawn series, in data units.
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend entry; `None` draws the series without one (e.g. further seeds of a value).
    pub legend: Option<String>,
    pub color: (u8, u8, u8),
    pub style: Style,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(
        legend: Option<String>,
        color: (u8, u8, u8),
        style: Style,
        points: Vec<(f64, f64)>,
    ) -> Self {
        Self {
            legend,
            color,
            style,
            points,
        }
    }
    /// A legend entry with nothing drawn (explains a line style or a marker).
    pub fn key(legend: &str, color: (u8, u8, u8), style: Style) -> Self {
        Self::new(Some(legend.to_string()), color, style, Vec::new())
    }
}

/// A labelled reference line at a data coordinate.
#[derive(Clone, Debug)]
pub struct RefLine {
    pub at: f64,
    pub label: String,
}

/// Everything needed to draw one chart.
#[derive(Clone, Debug)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    pub series: Vec<Series>,
    /// Vertical lines (x = at).
    pub vlines: Vec<RefLine>,
    /// Horizontal lines (y = at).
    pub hlines: Vec<RefLine>,
    /// A y range (data units) to use instead of the data's; points outside are clipped.
    pub y_range: Option<(f64, f64)>,
}

impl Figure {
    pub fn new(title: &str, x_label: &str, y_label: &str, x_log: bool, y_log: bool) -> Self {
        Self {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            x_log,
            y_log,
            series: Vec::new(),
            vlines: Vec::new(),
            hlines: Vec::new(),
            y_range: None,
        }
    }
}
