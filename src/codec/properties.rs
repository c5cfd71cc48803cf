//! MQTT 5.0 properties (§2.2.2), one typed struct per packet.
//!
//! Each struct lists exactly the properties its packet may carry; decoding any
//! other identifier is a Malformed Packet (§2.2.2.2), repeating one that may
//! appear once is a Protocol Error. User Properties keep their order
//! [MQTT-3.1.3-10] and are encoded last.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::error::{DecodeError, EncodeError};
use super::primitives::{
    Reader, VARINT_MAX, prefixed_len, property_block_len, put_binary, put_varint, varint_len,
};
use super::string::{MqttString, any_byte, contains_nul};
use super::topic::TopicName;
use super::{PacketType, QoS};

/// Property identifiers (MQTT 5.0 Table 2-4).
pub mod id {
    #![allow(missing_docs)]
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

    /// Every identifier the specification defines.
    pub const ALL: &[u8] = &[
        0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A,
        0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
    ];
}

/// Payload Format Indicator values (§3.3.2.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// Unspecified bytes.
    Unspecified = 0,
    /// UTF-8 encoded character data.
    Utf8 = 1,
}

/// A Subscription Identifier: 1 to 268,435,455 (§3.8.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(NonZeroU32);

impl SubscriptionId {
    /// The identifier, if `value` is in 1..=268,435,455.
    pub const fn new(value: u32) -> Option<Self> {
        match NonZeroU32::new(value) {
            Some(v) if value <= VARINT_MAX => Some(Self(v)),
            _ => None,
        }
    }

    /// Its value.
    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

/// One User Property: a name and a value, both UTF-8 strings (§3.1.2.11.8).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserProperty {
    /// Its name.
    pub key: MqttString,
    /// Its value.
    pub value: MqttString,
}

impl UserProperty {
    /// A property from two literals.
    ///
    /// # Panics
    /// If a literal is not a valid MQTT string: a bug in the caller.
    pub fn from_static(key: &'static str, value: &'static str) -> Self {
        Self {
            key: MqttString::from_static(key),
            value: MqttString::from_static(value),
        }
    }
}

/// The User Properties of one packet, in order [MQTT-3.1.3-10], duplicates
/// allowed.
///
/// They are kept in their wire form, `0x26 name value` after one another,
/// checked once when decoded: a decoded packet shares them with its input
/// buffer by one reference whatever their number, and forwarding writes
/// them with one copy. Read them with [`UserProperties::iter`].
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct UserProperties {
    raw: Bytes,
    count: usize,
}

/// One User Property read from [`UserProperties`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserPropertyRef<'a> {
    /// Its name.
    pub key: &'a str,
    /// Its value.
    pub value: &'a str,
}

impl UserProperties {
    /// No property.
    pub const fn new() -> Self {
        Self {
            raw: Bytes::new(),
            count: 0,
        }
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends one.
    pub fn push(&mut self, p: UserProperty) {
        let mut raw = BytesMut::with_capacity(self.raw.len() + p.wire_len());
        raw.extend_from_slice(&self.raw);
        raw.put_u8(USER_PROPERTY);
        put_binary(&mut raw, p.key.as_bytes());
        put_binary(&mut raw, p.value.as_bytes());
        self.raw = raw.freeze();
        self.count += 1;
    }

    /// The properties in order.
    pub fn iter(&self) -> impl Iterator<Item = UserPropertyRef<'_>> + '_ {
        let mut rest: &[u8] = &self.raw;
        std::iter::from_fn(move || {
            let (key, after) = split_string(rest.get(1..)?)?;
            let (value, after) = split_string(after)?;
            rest = after;
            Some(UserPropertyRef { key, value })
        })
    }

    /// The same properties in an allocation of their own, so that keeping
    /// them does not keep the buffer they were decoded from.
    #[must_use]
    pub fn detached(&self) -> Self {
        Self {
            raw: Bytes::copy_from_slice(&self.raw),
            count: self.count,
        }
    }

    /// Reads one after its identifier, checking both strings, and adds it:
    /// by widening the shared slice when it follows the last one read.
    fn absorb_one(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        // The identifier 0x26 is one byte, just read.
        let start = r.position() - 1;
        check_string(r.binary_slice()?)?;
        check_string(r.binary_slice()?)?;
        let end = r.position();
        let follows = r
            .offset_of(&self.raw)
            .filter(|at| at + self.raw.len() == start);
        self.raw = if self.raw.is_empty() {
            r.slice(start..end)
        } else if let Some(at) = follows {
            r.slice(at..end)
        } else {
            // Another property stands between: rare, so copied.
            let mut raw = BytesMut::with_capacity(self.raw.len() + end - start);
            raw.extend_from_slice(&self.raw);
            raw.extend_from_slice(&r.slice(start..end));
            raw.freeze()
        };
        self.count += 1;
        Ok(())
    }
}

/// Splits a checked two-byte-length-prefixed string off the front of `b`.
fn split_string(b: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = b.split_first_chunk::<2>()?;
    let (s, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
    Some((std::str::from_utf8(s).ok()?, rest))
}

/// [MQTT-1.5.4-1] then [MQTT-1.5.4-2], as for every UTF-8 string.
fn check_string(raw: &[u8]) -> Result<(), DecodeError> {
    // Most names and values are short ASCII: one branch-free pass proves
    // both rules, cheaper than setting up a UTF-8 validation.
    if !any_byte(raw, |b| (b == 0) | (b >= 0x80)) {
        return Ok(());
    }
    std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
    if contains_nul(raw) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(())
}

impl UserProperty {
    fn wire_len(&self) -> usize {
        1 + 2 + self.key.len() + 2 + self.value.len()
    }
}

impl From<Vec<UserProperty>> for UserProperties {
    fn from(v: Vec<UserProperty>) -> Self {
        v.into_iter().collect()
    }
}

impl FromIterator<UserProperty> for UserProperties {
    fn from_iter<I: IntoIterator<Item = UserProperty>>(iter: I) -> Self {
        let mut out = Self::new();
        for p in iter {
            out.push(p);
        }
        out
    }
}

impl std::fmt::Debug for UserProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|p| (p.key, p.value)))
            .finish()
    }
}

impl Field for UserProperties {
    const NONE: Self = Self::new();
    fn absorb(&mut self, r: &mut Reader<'_>, _: u8) -> Result<(), DecodeError> {
        self.absorb_one(r)
    }
    fn field_len(&self) -> Result<usize, EncodeError> {
        Ok(self.raw.len())
    }
    fn put<B: BufMut>(&self, _: u8, b: &mut B) {
        b.put_slice(&self.raw);
    }
}

/// A set of properties for one packet type.
pub trait PropertySet: Default + PartialEq + 'static {
    /// The set with no property present.
    fn empty() -> &'static Self;

    /// The same properties in allocations of their own, so that keeping
    /// them does not keep the buffer they were decoded from.
    #[must_use]
    fn detached(&self) -> Self;
}

/// A property value in allocations of its own (see [`PropertySet::detached`]).
pub(crate) trait Detach {
    fn detach(&self) -> Self;
}

impl<T: Detach> Detach for Option<T> {
    fn detach(&self) -> Self {
        self.as_ref().map(T::detach)
    }
}

/// Values that own everything they hold: a copy is already detached.
macro_rules! detach_by_clone {
    ($($t:ty),*) => {$(
        impl Detach for $t {
            fn detach(&self) -> Self {
                self.clone()
            }
        }
    )*};
}

detach_by_clone!(
    bool,
    u16,
    u32,
    NonZeroU16,
    NonZeroU32,
    QoS,
    PayloadFormat,
    SubscriptionId,
    Repeated<SubscriptionId>
);

impl Detach for Bytes {
    fn detach(&self) -> Self {
        Bytes::copy_from_slice(self)
    }
}

impl Detach for MqttString {
    fn detach(&self) -> Self {
        self.detached()
    }
}

impl Detach for TopicName {
    fn detach(&self) -> Self {
        self.detached()
    }
}

impl Detach for UserProperties {
    fn detach(&self) -> Self {
        self.detached()
    }
}

/// The properties of a packet, allocated only when at least one is present,
/// so the common packet without properties stays small and allocation-free.
///
/// It reads like the set it holds (`p.properties.message_expiry_interval`);
/// writing through it allocates the set on first use.
#[derive(Clone, Default)]
pub struct Properties<T>(Option<Box<T>>);

impl<T: PropertySet> Properties<T> {
    /// Whether no property is present.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(|p| p == T::empty())
    }

    /// The same properties in allocations of their own, so that keeping
    /// them does not keep the buffer they were decoded from.
    #[must_use]
    pub fn detached(&self) -> Self {
        Self(self.0.as_deref().map(|p| Box::new(p.detached())))
    }
}

/// Reading one property of a set from the wire.
pub(crate) trait Absorb {
    /// Reads the value of property `pid` into its field.
    fn absorb(
        &mut self,
        r: &mut Reader<'_>,
        pid: u8,
        packet_type: PacketType,
    ) -> Result<(), DecodeError>;
}

/// A property identifier the set does not hold: another packet's
/// (Protocol Error) or none the specification defines (Malformed Packet).
fn not_allowed(pid: u8, packet_type: PacketType) -> DecodeError {
    if id::ALL.contains(&pid) {
        DecodeError::PropertyNotAllowed {
            id: pid,
            packet_type,
        }
    } else {
        DecodeError::UnknownProperty(u32::from(pid))
    }
}

/// Reads a property block's identifiers, handing each to `absorb`.
#[inline]
fn read_block(
    r: &mut Reader<'_>,
    mut absorb: impl FnMut(&mut Reader<'_>, u8) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = r.varint()? as usize;
    let mut r = r.sub(len)?;
    while !r.is_empty() {
        let raw = r.varint()?;
        let pid = u8::try_from(raw).map_err(|_| DecodeError::UnknownProperty(raw))?;
        absorb(&mut r, pid)?;
    }
    Ok(())
}

/// Decodes a property block (its length prefix included); an empty block
/// allocates nothing.
pub(crate) fn decode_block<T: PropertySet + Absorb>(
    r: &mut Reader<'_>,
    packet_type: PacketType,
) -> Result<Properties<T>, DecodeError> {
    let mut props = Properties::<T>::default();
    read_block(r, |r, pid| absorb_boxed(&mut props, r, pid, packet_type))?;
    Ok(props)
}

/// Reads property `pid` into the set, allocating it on its first property.
fn absorb_boxed<T: PropertySet + Absorb>(
    props: &mut Properties<T>,
    r: &mut Reader<'_>,
    pid: u8,
    packet_type: PacketType,
) -> Result<(), DecodeError> {
    props
        .0
        .get_or_insert_with(Box::default)
        .absorb(r, pid, packet_type)
}

impl<T: PropertySet> std::ops::Deref for Properties<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_deref().unwrap_or(T::empty())
    }
}

impl<T: PropertySet> std::ops::DerefMut for Properties<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }
}

impl<T: PropertySet> From<T> for Properties<T> {
    fn from(set: T) -> Self {
        if &set == T::empty() {
            Self(None)
        } else {
            Self(Some(Box::new(set)))
        }
    }
}

impl<T: PropertySet> PartialEq for Properties<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: PropertySet + Eq> Eq for Properties<T> {}

impl<T: PropertySet + std::fmt::Debug> std::fmt::Debug for Properties<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// A property value type and its wire form.
pub(crate) trait Wire: Sized {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError>;
    fn wire_len(&self) -> Result<usize, EncodeError>;
    fn write<B: BufMut>(&self, b: &mut B);
}

impl Wire for bool {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    fn wire_len(&self) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write<B: BufMut>(&self, b: &mut B) {
        b.put_u8(u8::from(*self));
    }
}

impl Wire for u16 {
    fn read(r: &mut Reader, _: u8) -> Result<Self, DecodeError> {
        r.u16()
    }
    fn wire_len(&self) -> Result<usize, EncodeError> {
        Ok(2)
    }
    fn write<B: BufMut>(&self, b: &mut B) {
        b.put_u16(*self);
    }
}

impl Wire for NonZeroU16 {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        NonZeroU16::new(r.u16()?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    fn wire_len(&self) -> Result<usize, EncodeError> {
        Ok(2)
    }
    fn write<B: BufMut>(&self, b: &mut B) {
        b.put_u16(self.get());
    }
}

impl Wire for u32 {
    fn read(r: &mut Reader, _: u8) -> Result<Self, DecodeError> {
        r.u32()
    }
    fn wire_len(&self) -> Result<usize, EncodeError> {
        Ok(4)
    }
    fn write<B: BufMut>(&self, b: &mut B) {
        b.put_u32(*self);
    }
}

impl Wire for NonZeroU32 {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        NonZeroU32::new(r.u32()?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    fn wire_len(&self) -> Result<usize, EncodeError> {
        Ok(4)
    }
    fn write<B: BufMut>(&self, b: &mut B) {
        b.put_u32(self.get());
    }
}

/// Only Maximum QoS has this type, and it may only say 0 or 1 (§3.2.2.3.4).
impl Wire for QoS {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    fn wire_len(&self) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write<B: BufMut>(&self, b: &mut B) {
        b.put_u8(*self as u8);
    }
}

impl Wire for PayloadFormat {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(PayloadFormat::Unspecified),
            1 => Ok(PayloadFormat::Utf8),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    fn wire_len(&self) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write<B: BufMut>(&self, b: &mut B) {
        b.put_u8(*self as u8);
    }
}

impl Wire for SubscriptionId {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        SubscriptionId::new(r.varint()?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    fn wire_len(&self) -> Result<usize, EncodeError> {
        Ok(varint_len(self.get()))
    }
    fn write<B: BufMut>(&self, b: &mut B) {
        put_varint(b, self.get());
    }
}

impl Wire for MqttString {
    fn read(r: &mut Reader, _: u8) -> Result<Self, DecodeError> {
        r.string()
    }
    fn wire_len(&self) -> Result<usize, EncodeError> {
        prefixed_len(self.len())
    }
    fn write<B: BufMut>(&self, b: &mut B) {
        put_binary(b, self.as_bytes());
    }
}

impl Wire for TopicName {
    fn read(r: &mut Reader, _: u8) -> Result<Self, DecodeError> {
        TopicName::decode(r.binary()?)
    }
    fn wire_len(&self) -> Result<usize, EncodeError> {
        prefixed_len(self.len())
    }
    fn write<B: BufMut>(&self, b: &mut B) {
        put_binary(b, self.as_bytes());
    }
}

impl Wire for Bytes {
    fn read(r: &mut Reader, _: u8) -> Result<Self, DecodeError> {
        r.binary()
    }
    fn wire_len(&self) -> Result<usize, EncodeError> {
        prefixed_len(self.len())
    }
    fn write<B: BufMut>(&self, b: &mut B) {
        put_binary(b, self);
    }
}

/// How a property field of a struct holds its occurrences.
pub(crate) trait Field {
    const NONE: Self;
    fn absorb(&mut self, r: &mut Reader, id: u8) -> Result<(), DecodeError>;
    fn field_len(&self) -> Result<usize, EncodeError>;
    fn put<B: BufMut>(&self, id: u8, b: &mut B);
}

/// A property that may appear at most once.
impl<T: Wire> Field for Option<T> {
    const NONE: Self = None;
    fn absorb(&mut self, r: &mut Reader, id: u8) -> Result<(), DecodeError> {
        if self.is_some() {
            return Err(DecodeError::DuplicateProperty(id));
        }
        *self = Some(T::read(r, id)?);
        Ok(())
    }
    fn field_len(&self) -> Result<usize, EncodeError> {
        match self {
            Some(v) => Ok(1 + v.wire_len()?),
            None => Ok(0),
        }
    }
    fn put<B: BufMut>(&self, id: u8, b: &mut B) {
        if let Some(v) = self {
            b.put_u8(id);
            v.write(b);
        }
    }
}

/// A property that may repeat, in order (User Property, Subscription
/// Identifier in PUBLISH). The first ones live inline: most packets that
/// carry any carry one or two, and a second allocation per packet is what
/// made 5.0 decoding slow.
pub type Repeated<T> = SmallVec<[T; 2]>;

impl<T: Wire> Field for Repeated<T> {
    const NONE: Self = SmallVec::new_const();
    fn absorb(&mut self, r: &mut Reader, id: u8) -> Result<(), DecodeError> {
        self.push(T::read(r, id)?);
        Ok(())
    }
    fn field_len(&self) -> Result<usize, EncodeError> {
        self.iter()
            .try_fold(0, |acc, v| Ok(acc + 1 + v.wire_len()?))
    }
    fn put<B: BufMut>(&self, id: u8, b: &mut B) {
        for v in self {
            b.put_u8(id);
            v.write(b);
        }
    }
}

macro_rules! properties {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $id:path, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Absorb for $name {
            fn absorb(
                &mut self,
                r: &mut Reader<'_>,
                pid: u8,
                packet_type: PacketType,
            ) -> Result<(), DecodeError> {
                match pid {
                    $( $id => Field::absorb(&mut self.$field, r, pid), )*
                    _ => Err(not_allowed(pid, packet_type)),
                }
            }
        }

        impl $name {
            /// Length of the properties, without the block's length prefix.
            pub(crate) fn inner_len(&self) -> Result<usize, EncodeError> {
                Ok(0 $( + Field::field_len(&self.$field)? )*)
            }

            /// Length of the whole block, its length prefix included.
            #[allow(dead_code, reason = "PublishExtras is written inside PublishProperties' block")]
            pub(crate) fn block_len(&self) -> Result<usize, EncodeError> {
                property_block_len(self.inner_len()?)
            }

            /// Writes the whole block; [`Self::block_len`] has validated it.
            #[allow(dead_code, reason = "PublishExtras is written inside PublishProperties' block")]
            pub(crate) fn put_block<B: BufMut>(&self, b: &mut B) {
                let inner = self.inner_len().expect("block_len validated these properties");
                put_varint(b, inner as u32);
                self.put_fields(b);
            }

            /// Writes the properties without the block's length prefix.
            pub(crate) fn put_fields<B: BufMut>(&self, b: &mut B) {
                $( Field::put(&self.$field, $id, b); )*
            }

            /// Whether no property is set.
            pub fn is_empty(&self) -> bool {
                self == <Self as PropertySet>::empty()
            }
        }

        impl PropertySet for $name {
            fn empty() -> &'static Self {
                static EMPTY: $name = $name { $( $field: <$ty as Field>::NONE, )* };
                &EMPTY
            }

            fn detached(&self) -> Self {
                Self { $( $field: Detach::detach(&self.$field), )* }
            }
        }
    };
}

use id::*;

properties! {
    /// CONNECT properties (§3.1.2.11).
    ConnectProperties {
        /// Seconds the session outlives the connection; absent means 0.
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// How many QoS 1/2 publishes the client accepts at once.
        receive_maximum: Option<NonZeroU16> = RECEIVE_MAXIMUM,
        /// Largest packet the client accepts.
        maximum_packet_size: Option<NonZeroU32> = MAXIMUM_PACKET_SIZE,
        /// Highest topic alias the client accepts.
        topic_alias_maximum: Option<u16> = TOPIC_ALIAS_MAXIMUM,
        /// Whether the client wants Response Information in CONNACK.
        request_response_information: Option<bool> = REQUEST_RESPONSE_INFORMATION,
        /// Whether reason strings and user properties may be sent on failures.
        request_problem_information: Option<bool> = REQUEST_PROBLEM_INFORMATION,
        /// Enhanced authentication method.
        authentication_method: Option<MqttString> = AUTHENTICATION_METHOD,
        /// Enhanced authentication data.
        authentication_data: Option<Bytes> = AUTHENTICATION_DATA,
        /// User properties, in order.
        user_properties: UserProperties = USER_PROPERTY,
    }
}

properties! {
    /// Will properties (§3.1.3.2).
    WillProperties {
        /// Seconds to wait before publishing the will.
        will_delay_interval: Option<u32> = WILL_DELAY_INTERVAL,
        /// Whether the will payload is UTF-8.
        payload_format_indicator: Option<PayloadFormat> = PAYLOAD_FORMAT_INDICATOR,
        /// Lifetime of the will message once published.
        message_expiry_interval: Option<u32> = MESSAGE_EXPIRY_INTERVAL,
        /// Content type of the will payload.
        content_type: Option<MqttString> = CONTENT_TYPE,
        /// Topic for a response to the will.
        response_topic: Option<TopicName> = RESPONSE_TOPIC,
        /// Correlation data for a response.
        correlation_data: Option<Bytes> = CORRELATION_DATA,
        /// User properties, in order [MQTT-3.1.3-10].
        user_properties: UserProperties = USER_PROPERTY,
    }
}

properties! {
    /// CONNACK properties (§3.2.2.3).
    ConnAckProperties {
        /// Session expiry the server uses, when it differs from the request.
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// How many QoS 1/2 publishes the server accepts at once.
        receive_maximum: Option<NonZeroU16> = RECEIVE_MAXIMUM,
        /// Highest QoS the server supports (0 or 1; absent means 2).
        maximum_qos: Option<QoS> = MAXIMUM_QOS,
        /// Whether retained messages are supported.
        retain_available: Option<bool> = RETAIN_AVAILABLE,
        /// Largest packet the server accepts.
        maximum_packet_size: Option<NonZeroU32> = MAXIMUM_PACKET_SIZE,
        /// Client identifier assigned by the server.
        assigned_client_identifier: Option<MqttString> = ASSIGNED_CLIENT_IDENTIFIER,
        /// Highest topic alias the server accepts.
        topic_alias_maximum: Option<u16> = TOPIC_ALIAS_MAXIMUM,
        /// Human-readable reason.
        reason_string: Option<MqttString> = REASON_STRING,
        /// Whether wildcard subscriptions are supported.
        wildcard_subscription_available: Option<bool> = WILDCARD_SUBSCRIPTION_AVAILABLE,
        /// Whether subscription identifiers are supported.
        subscription_identifiers_available: Option<bool> = SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        /// Whether shared subscriptions are supported.
        shared_subscription_available: Option<bool> = SHARED_SUBSCRIPTION_AVAILABLE,
        /// Keep alive the client must use instead of its own.
        server_keep_alive: Option<u16> = SERVER_KEEP_ALIVE,
        /// Basis for response topics.
        response_information: Option<MqttString> = RESPONSE_INFORMATION,
        /// Another server to use.
        server_reference: Option<MqttString> = SERVER_REFERENCE,
        /// Enhanced authentication method.
        authentication_method: Option<MqttString> = AUTHENTICATION_METHOD,
        /// Enhanced authentication data.
        authentication_data: Option<Bytes> = AUTHENTICATION_DATA,
        /// User properties, in order.
        user_properties: UserProperties = USER_PROPERTY,
    }
}

/// PUBLISH properties (§3.3.2.3).
///
/// The three small ones most messages carry live inline; the others ([`PublishExtras`]) are allocated only when one is
/// present. They read and write through this struct all the same
/// (`p.properties.content_type`), and writing one allocates them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Whether the payload is UTF-8.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Lifetime of the message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic alias standing for (or being set to) the topic name.
    pub topic_alias: Option<NonZeroU16>,
    /// Every other PUBLISH property.
    pub extras: Properties<PublishExtras>,
}

impl std::ops::Deref for PublishProperties {
    type Target = PublishExtras;
    fn deref(&self) -> &PublishExtras {
        &self.extras
    }
}

impl std::ops::DerefMut for PublishProperties {
    fn deref_mut(&mut self) -> &mut PublishExtras {
        &mut self.extras
    }
}

impl PublishProperties {
    /// Decodes a property block (its length prefix included); allocates
    /// only for a property outside the three inline ones.
    #[inline]
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut props = Self::default();
        read_block(r, |r, pid| match pid {
            PAYLOAD_FORMAT_INDICATOR => Field::absorb(&mut props.payload_format_indicator, r, pid),
            MESSAGE_EXPIRY_INTERVAL => Field::absorb(&mut props.message_expiry_interval, r, pid),
            TOPIC_ALIAS => Field::absorb(&mut props.topic_alias, r, pid),
            _ => absorb_boxed(&mut props.extras, r, pid, PacketType::Publish),
        })?;
        Ok(props)
    }

    /// Length of the properties with `alias` as the Topic Alias, without
    /// the block's length prefix.
    fn inner_len_with(&self, alias: Option<NonZeroU16>) -> Result<usize, EncodeError> {
        Ok(Field::field_len(&self.payload_format_indicator)?
            + Field::field_len(&self.message_expiry_interval)?
            + Field::field_len(&alias)?
            + self.extras.inner_len()?)
    }

    /// Length of the whole block with `alias` as the Topic Alias, its length
    /// prefix included.
    pub(crate) fn block_len_with(&self, alias: Option<NonZeroU16>) -> Result<usize, EncodeError> {
        property_block_len(self.inner_len_with(alias)?)
    }

    /// Writes the whole block with `alias` as the Topic Alias;
    /// [`Self::block_len_with`] has validated it.
    pub(crate) fn put_block_with<B: BufMut>(&self, alias: Option<NonZeroU16>, b: &mut B) {
        let inner = self
            .inner_len_with(alias)
            .expect("block_len validated these properties");
        put_varint(b, inner as u32);
        Field::put(&self.payload_format_indicator, PAYLOAD_FORMAT_INDICATOR, b);
        Field::put(&self.message_expiry_interval, MESSAGE_EXPIRY_INTERVAL, b);
        Field::put(&alias, TOPIC_ALIAS, b);
        self.extras.put_fields(b);
    }

    /// The same properties in allocations of their own, so that keeping
    /// them does not keep the buffer they were decoded from.
    #[must_use]
    pub fn detached(&self) -> Self {
        Self {
            extras: self.extras.detached(),
            ..self.clone()
        }
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.payload_format_indicator.is_none()
            && self.message_expiry_interval.is_none()
            && self.topic_alias.is_none()
            && self.extras.is_empty()
    }
}

properties! {
    /// The PUBLISH properties besides the three inline in [`PublishProperties`].
    PublishExtras {
        /// Topic for a response.
        response_topic: Option<TopicName> = RESPONSE_TOPIC,
        /// Correlation data for a response.
        correlation_data: Option<Bytes> = CORRELATION_DATA,
        /// Subscription identifiers of the matching subscriptions (server to client).
        subscription_identifiers: Repeated<SubscriptionId> = SUBSCRIPTION_IDENTIFIER,
        /// Content type of the payload.
        content_type: Option<MqttString> = CONTENT_TYPE,
        /// User properties, in order.
        user_properties: UserProperties = USER_PROPERTY,
    }
}

properties! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    AckProperties {
        /// Human-readable reason.
        reason_string: Option<MqttString> = REASON_STRING,
        /// User properties, in order.
        user_properties: UserProperties = USER_PROPERTY,
    }
}

properties! {
    /// SUBSCRIBE properties (§3.8.2.1).
    SubscribeProperties {
        /// Identifier attached to messages delivered through these subscriptions.
        subscription_identifier: Option<SubscriptionId> = SUBSCRIPTION_IDENTIFIER,
        /// User properties, in order.
        user_properties: UserProperties = USER_PROPERTY,
    }
}

properties! {
    /// UNSUBSCRIBE properties (§3.10.2.1).
    UnsubscribeProperties {
        /// User properties, in order.
        user_properties: UserProperties = USER_PROPERTY,
    }
}

properties! {
    /// DISCONNECT properties (§3.14.2.2).
    DisconnectProperties {
        /// New session expiry (client to server only) [MQTT-3.14.2-2].
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// Human-readable reason.
        reason_string: Option<MqttString> = REASON_STRING,
        /// Another server to use.
        server_reference: Option<MqttString> = SERVER_REFERENCE,
        /// User properties, in order.
        user_properties: UserProperties = USER_PROPERTY,
    }
}

properties! {
    /// AUTH properties (§3.15.2.2).
    AuthProperties {
        /// Enhanced authentication method.
        authentication_method: Option<MqttString> = AUTHENTICATION_METHOD,
        /// Enhanced authentication data.
        authentication_data: Option<Bytes> = AUTHENTICATION_DATA,
        /// Human-readable reason.
        reason_string: Option<MqttString> = REASON_STRING,
        /// User properties, in order.
        user_properties: UserProperties = USER_PROPERTY,
    }
}
