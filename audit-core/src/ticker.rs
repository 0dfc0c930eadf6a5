/// Exchange suffixes that feeds append to a symbol (`VOD.L`, `AAPL.US`).
const EXCHANGE_SUFFIXES: &[&str] = &[
    ".US", ".L", ".LN", ".DE", ".PA", ".AS", ".TO", ".HK", ".T", ".AX", ".SW", ".MI", ".MC",
];

/// The ticker that signals for one instrument share, whatever the feed wrote.
///
/// Rule: trim, upper-case, drop an exchange prefix ending in `:` (`NASDAQ:AAPL`,
/// `BINANCE:BTCUSDT`), then drop one known exchange suffix (`.US`, `.L`, …),
/// and finally remove the separators `/`, `-`, `_` and spaces (`BTC/USD` and
/// `BTC-USD` become `BTCUSD`). Share classes written with a dot that is not a
/// known exchange (`BRK.B`) are kept.
pub fn normalise_ticker(ticker: &str) -> String {
    let upper = ticker.trim().to_uppercase();
    let without_prefix = match upper.rsplit_once(':') {
        Some((_, symbol)) => symbol,
        None => upper.as_str(),
    };
    let without_suffix = EXCHANGE_SUFFIXES
        .iter()
        .find_map(|suffix| {
            without_prefix
                .strip_suffix(suffix)
                .filter(|rest| !rest.is_empty())
        })
        .unwrap_or(without_prefix);
    without_suffix
        .chars()
        .filter(|c| !matches!(c, '/' | '-' | '_' | ' '))
        .collect()
}

/// Which tickers an analytics question covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TickerScope {
    All,
    /// One normalised ticker.
    One(String),
}

impl TickerScope {
    /// The normalised ticker, or `None` for all of them.
    pub fn ticker(&self) -> Option<&str> {
        match self {
            Self::All => None,
            Self::One(ticker) => Some(ticker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalise_ticker;

    #[test]
    fn strips_prefix_suffix_and_separators() {
        assert_eq!(normalise_ticker(" nasdaq:aapl "), "AAPL");
        assert_eq!(normalise_ticker("AAPL.US"), "AAPL");
        assert_eq!(normalise_ticker("vod.l"), "VOD");
        assert_eq!(normalise_ticker("BINANCE:BTC/USDT"), "BTCUSDT");
        assert_eq!(normalise_ticker("eur-usd"), "EURUSD");
        assert_eq!(normalise_ticker("BRK.B"), "BRK.B");
        assert_eq!(normalise_ticker(".US"), ".US");
    }
}
