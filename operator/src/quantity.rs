//! Kubernetes quantities ("500m", "2", "4Gi", "1.5G", "1e3") as numbers.

/// A quantity string that is not a valid, positive Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{value:?} is not a positive quantity (examples: 500m, 2, 512Mi, 10Gi)")]
pub struct QuantityError {
    /// The offending text.
    pub value: String,
}

/// The value of a quantity in base units (cores, bytes): "500m" → 0.5, "1Ki" → 1024.
pub fn parse(value: &str) -> Result<f64, QuantityError> {
    let err = || QuantityError {
        value: value.to_string(),
    };
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(v.len());
    let (num, suffix) = v.split_at(split);
    let number: f64 = num.parse().map_err(|_| err())?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().map_err(|_| err())?),
        _ => return Err(err()),
    };
    let out = number * factor;
    if out.is_finite() && out > 0.0 {
        Ok(out)
    } else {
        Err(err())
    }
}

/// Bytes in a storage or memory quantity, rounded up.
pub fn bytes(value: &str) -> Result<u64, QuantityError> {
    Ok(parse(value)?.ceil() as u64)
}

/// Bytes as a readable binary quantity ("1.5Gi", "512Mi", "100").
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["Ki", "Mi", "Gi", "Ti", "Pi"];
    let mut value = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if unit.is_empty() {
        format!("{bytes}")
    } else if (value - value.round()).abs() < 0.05 {
        format!("{}{unit}", value.round())
    } else {
        format!("{value:.1}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_memory() {
        assert_eq!(parse("500m").unwrap(), 0.5);
        assert_eq!(parse("2").unwrap(), 2.0);
        assert_eq!(parse("1.5").unwrap(), 1.5);
        assert_eq!(bytes("4Gi").unwrap(), 4 << 30);
        assert_eq!(bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(bytes("1e3").unwrap(), 1000);
    }

    #[test]
    fn rejects_nonsense_zero_and_negative() {
        for bad in ["", "abc", "-1", "0", "5Qi", "1.2.3Gi", "Gi"] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn formats_bytes() {
        assert_eq!(format_bytes(512), "512");
        assert_eq!(format_bytes(512 << 20), "512Mi");
        assert_eq!(format_bytes(3 << 29), "1.5Gi");
    }
}
