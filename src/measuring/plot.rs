//! A small SVG line plot with both axes from 0 to 100%, for the
//! measurement commands' curves (routing calibration, safety thresholds).

pub struct Plot {
    svg: String,
    title: String,
}

const W: f64 = 640.0;
const H: f64 = 420.0;
const M: f64 = 60.0;

fn x(v: f64) -> f64 {
    M + v * (W - 2.0 * M)
}

fn y(v: f64) -> f64 {
    H - M - v * (H - 2.0 * M)
}

impl Plot {
    /// A frame with a 10% grid and the axes' labels.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        for i in 0..=10 {
            let v = i as f64 / 10.0;
            s += &format!(
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}%</text>\n<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}%</text>\n",
                x(v), y(0.0), x(v), y(1.0), x(v), y(0.0) + 18.0, v * 100.0,
                x(0.0), y(v), x(1.0), y(v), x(0.0) - 6.0, y(v) + 4.0, v * 100.0
            );
        }
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x_label}</text>\n<text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">{y_label}</text>\n",
            W / 2.0, H - 14.0, H / 2.0, H / 2.0
        );
        Self {
            svg: s,
            title: title.to_string(),
        }
    }

    /// A polyline through `points` (x, y in 0..1), with a dot on each point
    /// of `dot_radius` (0: none).
    pub fn line(&mut self, points: &[(f64, f64)], colour: &str, dashed: bool, dot_radius: f64) {
        let coords: Vec<String> = points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect();
        let dash = if dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let width = if dashed { 1 } else { 2 };
        self.svg += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\"{dash}/>\n",
            coords.join(" ")
        );
        if dot_radius > 0.0 {
            for &(px, py) in points {
                self.svg += &format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{dot_radius}\" fill=\"{colour}\"/>\n",
                    x(px),
                    y(py)
                );
            }
        }
    }

    /// A labelled point.
    pub fn mark(&mut self, px: f64, py: f64, colour: &str, label: &str) {
        self.svg += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"6\" fill=\"{colour}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{label}</text>\n",
            x(px), y(py), x(px) + 9.0, y(py) - 8.0
        );
    }

    pub fn finish(self) -> String {
        format!(
            "{}<text x=\"{:.1}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n</svg>\n",
            self.svg,
            W / 2.0,
            self.title
        )
    }
}
