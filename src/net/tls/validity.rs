//! The validity period of a DER certificate, and whether it issued itself, read with
//! just enough DER to reach them: rustls and webpki do not expose them, and they are
//! only needed for a warning and to time ACME renewals.

const TAG_SEQUENCE: u8 = 0x30;
const TAG_VERSION: u8 = 0xa0;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;

/// `notBefore` and `notAfter` of a DER certificate as Unix seconds, or `None` if it
/// cannot be read. Just enough DER to reach `tbsCertificate.validity` (RFC 5280 §4.1);
/// rustls and webpki do not expose it.
pub fn validity_period(cert: &[u8]) -> Option<(i64, i64)> {
    let fields = issuer_onwards(cert)?;
    // issuer
    let fields = der_read(fields)?.2;
    let (TAG_SEQUENCE, validity, _) = der_read(fields)? else {
        return None;
    };
    let (tag, not_before, rest) = der_read(validity)?;
    let not_before = parse_der_time(tag, not_before)?;
    let (tag, not_after, _) = der_read(rest)?;
    Some((not_before, parse_der_time(tag, not_after)?))
}

/// Whether the certificate's issuer is its subject (byte for byte), as for a
/// self-signed one; `None` if it cannot be read. A CA's end-entity certificate never is.
pub fn self_issued(cert: &[u8]) -> Option<bool> {
    let (_, issuer, rest) = der_read(issuer_onwards(cert)?)?;
    // validity, then subject
    let (_, subject, _) = der_read(der_read(rest)?.2)?;
    Some(issuer == subject)
}

/// The fields of `tbsCertificate` from `issuer` on (RFC 5280 §4.1).
fn issuer_onwards(cert: &[u8]) -> Option<&[u8]> {
    let (TAG_SEQUENCE, certificate, _) = der_read(cert)? else {
        return None;
    };
    let (TAG_SEQUENCE, tbs, _) = der_read(certificate)? else {
        return None;
    };
    let (tag, _, after_version) = der_read(tbs)?;
    let fields = if tag == TAG_VERSION {
        after_version
    } else {
        tbs
    };
    // serialNumber, signature
    let fields = der_read(fields)?.2;
    Some(der_read(fields)?.2)
}

/// One DER element: (tag, contents, what follows). Single-byte tags only, which is all
/// the path to `validity` uses.
pub(super) fn der_read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (len_bytes, rest) = rest.split_at_checked(count)?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &byte| (acc << 8) | usize::from(byte));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// A DER `UTCTime` (`YYMMDDHHMMSSZ`) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`) as Unix
/// seconds. UTCTime years 50..99 are 19xx (RFC 5280 §4.1.2.5.1).
fn parse_der_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = text.strip_suffix(b"Z")?;
    let (year, rest) = match (tag, digits.len()) {
        (TAG_UTC_TIME, 12) => {
            let (yy, rest) = digits.split_at_checked(2)?;
            let yy = parse_digits(yy)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        (TAG_GENERALIZED_TIME, 14) => {
            let (yyyy, rest) = digits.split_at_checked(4)?;
            (parse_digits(yyyy)?, rest)
        }
        _ => return None,
    };
    let fields = rest
        .chunks_exact(2)
        .map(parse_digits)
        .collect::<Option<Vec<_>>>()?;
    let [month, day, hour, minute, second] = fields[..] else {
        return None;
    };
    let plausible = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second <= 60;
    plausible
        .then(|| days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn parse_digits(digits: &[u8]) -> Option<i64> {
    digits.iter().try_fold(0i64, |acc, &digit| {
        digit
            .is_ascii_digit()
            .then(|| acc * 10 + i64::from(digit - b'0'))
    })
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_validity_period() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("p");
        // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280).
        params.not_before = rcgen::date_time_ymd(1999, 12, 31);
        params.not_after = rcgen::date_time_ymd(2061, 3, 1);
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            validity_period(cert.der()),
            Some((
                params.not_before.unix_timestamp(),
                params.not_after.unix_timestamp()
            ))
        );
        assert_eq!(validity_period(b"\x30\x03\x02\x01"), None);
        assert_eq!(validity_period(b""), None);
    }

    #[test]
    fn tells_a_self_signed_certificate_from_an_issued_one() {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("p");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        assert_eq!(self_issued(ca.der()), Some(true));
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).expect("p");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "a.example");
        let leaf = params.signed_by(&key, &issuer).expect("leaf");
        assert_eq!(self_issued(leaf.der()), Some(false));
        assert_eq!(self_issued(b""), None);
    }
}
