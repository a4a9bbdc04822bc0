//! The BFD Control packet's mandatory section (RFC 5880 §4.1).

use super::{Auth, DecodeError};

/// Length of the mandatory section.
pub const HEADER_LEN: usize = 24;
/// The only protocol version (RFC 5880 §4.1).
pub const VERSION: u8 = 1;

const FLAG_P: u8 = 0x20;
const FLAG_F: u8 = 0x10;
const FLAG_C: u8 = 0x08;
const FLAG_A: u8 = 0x04;
const FLAG_D: u8 = 0x02;
const FLAG_M: u8 = 0x01;

/// Session state as carried in the State (Sta) field (RFC 5880 §4.1, §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// 0: AdminDown.
    AdminDown,
    /// 1: Down.
    Down,
    /// 2: Init.
    Init,
    /// 3: Up.
    Up,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::AdminDown => "admin_down",
            State::Down => "down",
            State::Init => "init",
            State::Up => "up",
        })
    }
}

/// Diagnostic code (RFC 5880 §4.1; 9 from RFC 6428). Five bits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diag {
    /// 0: No Diagnostic.
    None,
    /// 1: Control Detection Time Expired.
    DetectionTimeExpired,
    /// 2: Echo Function Failed.
    EchoFailed,
    /// 3: Neighbor Signaled Session Down.
    NeighborDown,
    /// 4: Forwarding Plane Reset.
    ForwardingPlaneReset,
    /// 5: Path Down.
    PathDown,
    /// 6: Concatenated Path Down.
    ConcatenatedPathDown,
    /// 7: Administratively Down.
    AdminDown,
    /// 8: Reverse Concatenated Path Down.
    ReverseConcatenatedPathDown,
    /// 9: Mis-Connectivity Defect (RFC 6428).
    MisConnectivity,
    /// 10–31: reserved codes, kept as received.
    Other(u8),
}

impl Diag {
    /// The diagnostic of a 5-bit code.
    pub fn from_code(code: u8) -> Diag {
        match code & 0x1f {
            0 => Diag::None,
            1 => Diag::DetectionTimeExpired,
            2 => Diag::EchoFailed,
            3 => Diag::NeighborDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdminDown,
            8 => Diag::ReverseConcatenatedPathDown,
            9 => Diag::MisConnectivity,
            c => Diag::Other(c),
        }
    }

    /// The 5-bit code (an `Other` code is masked to 5 bits).
    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::DetectionTimeExpired => 1,
            Diag::EchoFailed => 2,
            Diag::NeighborDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdminDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::MisConnectivity => 9,
            Diag::Other(c) => c & 0x1f,
        }
    }
}

impl std::fmt::Display for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Diag::None => f.write_str("no diagnostic"),
            Diag::DetectionTimeExpired => f.write_str("control detection time expired"),
            Diag::EchoFailed => f.write_str("echo function failed"),
            Diag::NeighborDown => f.write_str("neighbor signaled session down"),
            Diag::ForwardingPlaneReset => f.write_str("forwarding plane reset"),
            Diag::PathDown => f.write_str("path down"),
            Diag::ConcatenatedPathDown => f.write_str("concatenated path down"),
            Diag::AdminDown => f.write_str("administratively down"),
            Diag::ReverseConcatenatedPathDown => f.write_str("reverse concatenated path down"),
            Diag::MisConnectivity => f.write_str("mis-connectivity defect"),
            Diag::Other(c) => write!(f, "diagnostic {c}"),
        }
    }
}

/// A BFD Control packet (RFC 5880 §4.1). Intervals are in microseconds, as on the wire.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       My Discriminator                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      Your Discriminator                       |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Desired Min TX Interval                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                   Required Min RX Interval                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                 Required Min Echo RX Interval                 |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Auth Type   |   Auth Len    |    Authentication Data...     |   (A bit only)
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// The version is always 1 and the M bit always clear (the decoder refuses anything else);
/// the A bit and the Length field follow from [`ControlPacket::auth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPacket {
    /// Diag: why the sender's session last went down.
    pub diag: Diag,
    /// Sta: the sender's session state.
    pub state: State,
    /// P: Poll, the sender asks for a Final.
    pub poll: bool,
    /// F: Final, the answer to a Poll.
    pub final_: bool,
    /// C: Control Plane Independent.
    pub cpi: bool,
    /// D: Demand mode.
    pub demand: bool,
    /// Detect Mult (never 0).
    pub detect_mult: u8,
    /// My Discriminator (never 0).
    pub my_discr: u32,
    /// Your Discriminator (0 when the sender does not know it yet).
    pub your_discr: u32,
    /// Desired Min TX Interval, µs.
    pub desired_min_tx: u32,
    /// Required Min RX Interval, µs (0: the sender wants no periodic packets).
    pub required_min_rx: u32,
    /// Required Min Echo RX Interval, µs (0: no Echo).
    pub required_min_echo_rx: u32,
    /// The authentication section; `Some` is the A bit.
    pub auth: Option<Auth>,
}

impl ControlPacket {
    /// Decodes one UDP payload, checking the §6.8.6 rules that need no session state: version
    /// 1, 24 ≤ Length ≤ datagram, Detect Mult ≠ 0, M clear, My Discriminator ≠ 0, Your
    /// Discriminator ≠ 0 unless the State is Down or AdminDown, and the A bit present exactly
    /// when the Length covers an authentication section. Bytes past Length are ignored.
    pub fn decode(buf: &[u8]) -> Result<ControlPacket, DecodeError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::Truncated(buf.len()));
        };
        let version = head[0] >> 5;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let flags = head[1];
        let length = head[3];
        let auth_bit = flags & FLAG_A != 0;
        let min = if auth_bit { HEADER_LEN + 2 } else { HEADER_LEN };
        if usize::from(length) < min {
            return Err(if auth_bit && usize::from(length) == HEADER_LEN {
                DecodeError::AuthMissing
            } else {
                DecodeError::LengthTooShort(length)
            });
        }
        if usize::from(length) > buf.len() {
            return Err(DecodeError::LengthPastDatagram {
                field: length,
                datagram: buf.len(),
            });
        }
        let detect_mult = head[2];
        if detect_mult == 0 {
            return Err(DecodeError::DetectMultZero);
        }
        if flags & FLAG_M != 0 {
            return Err(DecodeError::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let state = State::from_bits(flags >> 6);
        let my_discr = word(4);
        let your_discr = word(8);
        if my_discr == 0 {
            return Err(DecodeError::MyDiscriminatorZero);
        }
        if your_discr == 0 && matches!(state, State::Init | State::Up) {
            return Err(DecodeError::YourDiscriminatorZero(state));
        }
        let section = buf.get(HEADER_LEN..usize::from(length)).unwrap_or_default();
        let auth = if auth_bit {
            Some(Auth::decode(section)?)
        } else if !section.is_empty() {
            return Err(DecodeError::UnexpectedAuth(section.len()));
        } else {
            None
        };
        Ok(ControlPacket {
            diag: Diag::from_code(head[0]),
            state,
            poll: flags & FLAG_P != 0,
            final_: flags & FLAG_F != 0,
            cpi: flags & FLAG_C != 0,
            demand: flags & FLAG_D != 0,
            detect_mult,
            my_discr,
            your_discr,
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
            auth,
        })
    }

    /// Encodes the packet; the Length field covers the authentication section, if any.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 28);
        out.push((VERSION << 5) | self.diag.code());
        let mut flags = self.state.bits() << 6;
        for (on, bit) in [
            (self.poll, FLAG_P),
            (self.final_, FLAG_F),
            (self.cpi, FLAG_C),
            (self.auth.is_some(), FLAG_A),
            (self.demand, FLAG_D),
        ] {
            if on {
                flags |= bit;
            }
        }
        out.push(flags);
        out.push(self.detect_mult);
        out.push(0); // Length, set below.
        for w in [
            self.my_discr,
            self.your_discr,
            self.desired_min_tx,
            self.required_min_rx,
            self.required_min_echo_rx,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        if let Some(auth) = &self.auth {
            auth.encode_into(&mut out);
        }
        // The auth section is at most 2 + 255 bytes by construction of Auth::encode_into, but
        // the Length field is one byte: clamp rather than wrap (such a packet decodes as an
        // error on the other side instead of as something else).
        out[3] = u8::try_from(out.len()).unwrap_or(u8::MAX);
        out
    }
}
