//! Turning a number of triads into a rectangle, exactly as the original's `area_to_rect`.
//!
//! The n-boards request shape asks for "at least n boards, at least this square"; the pack tree
//! needs a width and a height. The arithmetic (including its floating-point steps) follows the
//! original so that the same request gets the same rectangle.

/// The most square `(w, h)` with `w * h == area` and `w >= h`.
pub fn squarest_rectangle(area: u64) -> (u64, u64) {
    debug_assert!(area > 0);
    let root = isqrt(area);
    let h = (1..=root).rev().find(|d| area % d == 0).unwrap_or(1);
    (area / h, h)
}

/// The smallest-ish rectangle of at least `area` cells whose aspect ratio is at least `ratio`
/// (0 < ratio <= 1), `w >= h`.
pub fn rectangle_with_aspect_ratio(area: u64, ratio: f64) -> (u64, u64) {
    let w_float = (area as f64 / ratio).sqrt();
    let h = (area as f64 / w_float).ceil() as u64;
    let h = h.max(1);
    let w = (area as f64 / h as f64).ceil() as u64;
    (w.max(h), h)
}

/// The rectangle `(w, h)` of about `area` cells to request inside a `bw`x`bh` bounding box, at
/// least as square as `min_ratio`, or `None` if there is none. Invalid inputs (area, bw or bh
/// zero, negative or NaN ratio) also give `None`: the original raised `ValueError` there, which
/// only ever surfaced as an impossible request.
pub fn area_to_rect(area: u64, bw: u64, bh: u64, min_ratio: f64) -> Option<(u64, u64)> {
    if area == 0 || bw == 0 || bh == 0 || min_ratio.is_nan() || min_ratio < 0.0 {
        return None;
    }
    if area > bw.saturating_mul(bh) {
        return None;
    }
    let min_ratio = if min_ratio > 1.0 {
        1.0 / min_ratio
    } else {
        min_ratio
    };

    let (mut w, mut h) = squarest_rectangle(area);
    if (h as f64) / (w as f64) < min_ratio {
        (w, h) = rectangle_with_aspect_ratio(area, min_ratio);
    }
    // Orient the rectangle against the bounding box's long side, as the original does.
    if bw > bh && w > h {
        std::mem::swap(&mut w, &mut h);
    }
    if w <= bw && h <= bh {
        return Some((w, h));
    }
    // Squash it to fit, then check the ratio survived.
    if w > bw {
        w = bw;
        h = area.div_ceil(w);
    } else if h > bh {
        h = bh;
        w = area.div_ceil(h);
    }
    let ratio = w.min(h) as f64 / w.max(h) as f64;
    (ratio >= min_ratio).then_some((w, h))
}

fn isqrt(n: u64) -> u64 {
    let mut r = (n as f64).sqrt() as u64;
    while r * r > n {
        r -= 1;
    }
    while (r + 1) * (r + 1) <= n {
        r += 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squarest_reference_cases() {
        assert_eq!(squarest_rectangle(1), (1, 1));
        assert_eq!(squarest_rectangle(6), (3, 2));
        assert_eq!(squarest_rectangle(7), (7, 1));
        assert_eq!(squarest_rectangle(12), (4, 3));
        assert_eq!(squarest_rectangle(16), (4, 4));
    }

    #[test]
    fn aspect_ratio_reference_cases() {
        assert_eq!(rectangle_with_aspect_ratio(5, 1.0), (3, 3));
        assert_eq!(rectangle_with_aspect_ratio(5, 0.5), (3, 2));
        assert_eq!(rectangle_with_aspect_ratio(6, 0.75), (3, 3));
        assert_eq!(rectangle_with_aspect_ratio(3, 0.5), (2, 2));
    }

    #[test]
    fn area_to_rect_reference_table() {
        let cases: [((u64, u64, u64, f64), Option<(u64, u64)>); 18] = [
            ((1, 2, 2, 0.0), Some((1, 1))),
            ((2, 1, 1, 0.0), None),
            ((2, 2, 1, 0.0), Some((2, 1))),
            ((2, 1, 2, 0.0), Some((1, 2))),
            ((2, 3, 3, 0.0), Some((2, 1))),
            ((2, 3, 4, 0.0), Some((2, 1))),
            ((2, 4, 3, 0.0), Some((1, 2))),
            ((2, 2, 2, 0.5), Some((2, 1))),
            ((2, 2, 2, 2.0), Some((2, 1))),
            ((2, 2, 2, 0.6), Some((2, 2))),
            ((2, 1, 2, 1.0), None),
            ((5, 3, 3, 0.0), Some((3, 2))),
            ((5, 4, 3, 0.0), Some((2, 3))),
            ((5, 2, 3, 1.0), None),
            ((7, 10, 10, 0.0), Some((7, 1))),
            ((7, 10, 10, 0.5), Some((4, 2))),
            ((13, 10, 10, 0.5), Some((5, 3))),
            ((12, 4, 3, 0.0), Some((4, 3))),
        ];
        for ((a, bw, bh, r), want) in cases {
            assert_eq!(
                area_to_rect(a, bw, bh, r),
                want,
                "area_to_rect({a}, {bw}, {bh}, {r})"
            );
        }
    }

    #[test]
    fn invalid_inputs_give_none() {
        assert_eq!(area_to_rect(0, 2, 2, 0.0), None);
        assert_eq!(area_to_rect(1, 0, 2, 0.0), None);
        assert_eq!(area_to_rect(1, 2, 2, -0.5), None);
        assert_eq!(area_to_rect(1, 2, 2, f64::NAN), None);
    }

    #[test]
    fn result_always_fits_and_covers_the_area() {
        for area in 1..60u64 {
            for bw in 1..9u64 {
                for bh in 1..9u64 {
                    for r in [0.0, 0.25, 0.5, 0.75, 1.0] {
                        if let Some((w, h)) = area_to_rect(area, bw, bh, r) {
                            assert!(w <= bw && h <= bh && w * h >= area, "{area} {bw} {bh} {r}");
                        }
                    }
                }
            }
        }
    }
}
