//! Reason codes: one typed enum per packet family, with the names the MQTT 5.0
//! specification gives them (§2.4), and the MQTT 3.1.1 CONNACK return codes.

use std::fmt;

macro_rules! reason_codes {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $spec:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name {
            $( #[doc = $spec] $(#[$vmeta])* $variant = $code, )*
        }

        impl $name {
            /// The byte on the wire.
            pub const fn code(self) -> u8 {
                self as u8
            }

            /// The name the specification gives this code.
            pub const fn spec_name(self) -> &'static str {
                match self {
                    $( Self::$variant => $spec, )*
                }
            }

            /// Codes of 0x80 and above report a failure [MQTT-2.4].
            pub const fn is_error(self) -> bool {
                (self as u8) >= 0x80
            }

            /// The code for a byte, if this packet family defines it.
            pub const fn from_code(code: u8) -> Option<Self> {
                match code {
                    $( $code => Some(Self::$variant), )*
                    _ => None,
                }
            }

            /// Every code of this family, in wire order.
            pub const ALL: &'static [Self] = &[ $( Self::$variant, )* ];
        }

        impl TryFrom<u8> for $name {
            type Error = u8;
            fn try_from(code: u8) -> Result<Self, u8> {
                Self::from_code(code).ok_or(code)
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> u8 {
                value.code()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} (0x{:02X})", self.spec_name(), self.code())
            }
        }
    };
}

reason_codes! {
    /// CONNACK reason codes (MQTT 5.0 §3.2.2.2). In 3.1.1 they map onto
    /// [`ConnectReturnCode`].
    ConnectReasonCode {
        Success = 0x00 => "Success",
        UnspecifiedError = 0x80 => "Unspecified error",
        MalformedPacket = 0x81 => "Malformed Packet",
        ProtocolError = 0x82 => "Protocol Error",
        ImplementationSpecificError = 0x83 => "Implementation specific error",
        UnsupportedProtocolVersion = 0x84 => "Unsupported Protocol Version",
        ClientIdentifierNotValid = 0x85 => "Client Identifier not valid",
        BadUserNameOrPassword = 0x86 => "Bad User Name or Password",
        NotAuthorized = 0x87 => "Not authorized",
        ServerUnavailable = 0x88 => "Server unavailable",
        ServerBusy = 0x89 => "Server busy",
        Banned = 0x8A => "Banned",
        BadAuthenticationMethod = 0x8C => "Bad authentication method",
        TopicNameInvalid = 0x90 => "Topic Name invalid",
        PacketTooLarge = 0x95 => "Packet too large",
        QuotaExceeded = 0x97 => "Quota exceeded",
        PayloadFormatInvalid = 0x99 => "Payload format invalid",
        RetainNotSupported = 0x9A => "Retain not supported",
        QoSNotSupported = 0x9B => "QoS not supported",
        UseAnotherServer = 0x9C => "Use another server",
        ServerMoved = 0x9D => "Server moved",
        ConnectionRateExceeded = 0x9F => "Connection rate exceeded",
    }
}

reason_codes! {
    /// PUBACK and PUBREC reason codes (MQTT 5.0 §3.4.2.1, §3.5.2.1).
    PubAckReasonCode {
        Success = 0x00 => "Success",
        NoMatchingSubscribers = 0x10 => "No matching subscribers",
        UnspecifiedError = 0x80 => "Unspecified error",
        ImplementationSpecificError = 0x83 => "Implementation specific error",
        NotAuthorized = 0x87 => "Not authorized",
        TopicNameInvalid = 0x90 => "Topic Name invalid",
        PacketIdentifierInUse = 0x91 => "Packet identifier in use",
        QuotaExceeded = 0x97 => "Quota exceeded",
        PayloadFormatInvalid = 0x99 => "Payload format invalid",
    }
}

/// PUBREC uses the same table as PUBACK (MQTT 5.0 §3.5.2.1).
pub type PubRecReasonCode = PubAckReasonCode;

reason_codes! {
    /// PUBREL and PUBCOMP reason codes (MQTT 5.0 §3.6.2.1, §3.7.2.1).
    PubRelReasonCode {
        Success = 0x00 => "Success",
        PacketIdentifierNotFound = 0x92 => "Packet Identifier not found",
    }
}

/// PUBCOMP uses the same table as PUBREL (MQTT 5.0 §3.7.2.1).
pub type PubCompReasonCode = PubRelReasonCode;

reason_codes! {
    /// SUBACK reason codes (MQTT 5.0 §3.9.3). In 3.1.1 every failure is 0x80.
    SubAckReasonCode {
        GrantedQoS0 = 0x00 => "Granted QoS 0",
        GrantedQoS1 = 0x01 => "Granted QoS 1",
        GrantedQoS2 = 0x02 => "Granted QoS 2",
        UnspecifiedError = 0x80 => "Unspecified error",
        ImplementationSpecificError = 0x83 => "Implementation specific error",
        NotAuthorized = 0x87 => "Not authorized",
        TopicFilterInvalid = 0x8F => "Topic Filter invalid",
        PacketIdentifierInUse = 0x91 => "Packet Identifier in use",
        QuotaExceeded = 0x97 => "Quota exceeded",
        SharedSubscriptionsNotSupported = 0x9E => "Shared Subscriptions not supported",
        SubscriptionIdentifiersNotSupported = 0xA1 => "Subscription Identifiers not supported",
        WildcardSubscriptionsNotSupported = 0xA2 => "Wildcard Subscriptions not supported",
    }
}

reason_codes! {
    /// UNSUBACK reason codes (MQTT 5.0 §3.11.3). 3.1.1 has none.
    UnsubAckReasonCode {
        Success = 0x00 => "Success",
        NoSubscriptionExisted = 0x11 => "No subscription existed",
        UnspecifiedError = 0x80 => "Unspecified error",
        ImplementationSpecificError = 0x83 => "Implementation specific error",
        NotAuthorized = 0x87 => "Not authorized",
        TopicFilterInvalid = 0x8F => "Topic Filter invalid",
        PacketIdentifierInUse = 0x91 => "Packet Identifier in use",
    }
}

reason_codes! {
    /// DISCONNECT reason codes (MQTT 5.0 §3.14.2.1). 3.1.1 has none.
    DisconnectReasonCode {
        NormalDisconnection = 0x00 => "Normal disconnection",
        DisconnectWithWillMessage = 0x04 => "Disconnect with Will Message",
        UnspecifiedError = 0x80 => "Unspecified error",
        MalformedPacket = 0x81 => "Malformed Packet",
        ProtocolError = 0x82 => "Protocol Error",
        ImplementationSpecificError = 0x83 => "Implementation specific error",
        NotAuthorized = 0x87 => "Not authorized",
        ServerBusy = 0x89 => "Server busy",
        ServerShuttingDown = 0x8B => "Server shutting down",
        KeepAliveTimeout = 0x8D => "Keep Alive timeout",
        SessionTakenOver = 0x8E => "Session taken over",
        TopicFilterInvalid = 0x8F => "Topic Filter invalid",
        TopicNameInvalid = 0x90 => "Topic Name invalid",
        ReceiveMaximumExceeded = 0x93 => "Receive Maximum exceeded",
        TopicAliasInvalid = 0x94 => "Topic Alias invalid",
        PacketTooLarge = 0x95 => "Packet too large",
        MessageRateTooHigh = 0x96 => "Message rate too high",
        QuotaExceeded = 0x97 => "Quota exceeded",
        AdministrativeAction = 0x98 => "Administrative action",
        PayloadFormatInvalid = 0x99 => "Payload format invalid",
        RetainNotSupported = 0x9A => "Retain not supported",
        QoSNotSupported = 0x9B => "QoS not supported",
        UseAnotherServer = 0x9C => "Use another server",
        ServerMoved = 0x9D => "Server moved",
        SharedSubscriptionsNotSupported = 0x9E => "Shared Subscriptions not supported",
        ConnectionRateExceeded = 0x9F => "Connection rate exceeded",
        MaximumConnectTime = 0xA0 => "Maximum connect time",
        SubscriptionIdentifiersNotSupported = 0xA1 => "Subscription Identifiers not supported",
        WildcardSubscriptionsNotSupported = 0xA2 => "Wildcard Subscriptions not supported",
    }
}

reason_codes! {
    /// AUTH reason codes (MQTT 5.0 §3.15.2.1).
    AuthReasonCode {
        Success = 0x00 => "Success",
        ContinueAuthentication = 0x18 => "Continue authentication",
        ReAuthenticate = 0x19 => "Re-authenticate",
    }
}

reason_codes! {
    /// MQTT 3.1.1 CONNACK return codes (§3.2.2.3).
    ConnectReturnCode {
        Accepted = 0x00 => "Connection Accepted",
        UnacceptableProtocolVersion = 0x01 => "Connection Refused, unacceptable protocol version",
        IdentifierRejected = 0x02 => "Connection Refused, identifier rejected",
        ServerUnavailable = 0x03 => "Connection Refused, Server unavailable",
        BadUserNameOrPassword = 0x04 => "Connection Refused, bad user name or password",
        NotAuthorized = 0x05 => "Connection Refused, not authorized",
    }
}

impl From<ConnectReasonCode> for ConnectReturnCode {
    /// The 3.1.1 return code closest in meaning; failures 3.1.1 has no word
    /// for become "Server unavailable".
    fn from(code: ConnectReasonCode) -> Self {
        use ConnectReasonCode as C;
        match code {
            C::Success => Self::Accepted,
            C::UnsupportedProtocolVersion => Self::UnacceptableProtocolVersion,
            C::ClientIdentifierNotValid => Self::IdentifierRejected,
            C::BadUserNameOrPassword | C::BadAuthenticationMethod => Self::BadUserNameOrPassword,
            C::NotAuthorized | C::Banned => Self::NotAuthorized,
            _ => Self::ServerUnavailable,
        }
    }
}

impl From<ConnectReturnCode> for ConnectReasonCode {
    fn from(code: ConnectReturnCode) -> Self {
        use ConnectReturnCode as R;
        match code {
            R::Accepted => Self::Success,
            R::UnacceptableProtocolVersion => Self::UnsupportedProtocolVersion,
            R::IdentifierRejected => Self::ClientIdentifierNotValid,
            R::ServerUnavailable => Self::ServerUnavailable,
            R::BadUserNameOrPassword => Self::BadUserNameOrPassword,
            R::NotAuthorized => Self::NotAuthorized,
        }
    }
}

impl SubAckReasonCode {
    /// The success code granting `qos`.
    pub const fn granted(qos: super::QoS) -> Self {
        match qos {
            super::QoS::AtMostOnce => Self::GrantedQoS0,
            super::QoS::AtLeastOnce => Self::GrantedQoS1,
            super::QoS::ExactlyOnce => Self::GrantedQoS2,
        }
    }

    /// The code as a 3.1.1 SUBACK return code: QoS granted, or 0x80 Failure.
    pub const fn v311_code(self) -> u8 {
        if self.is_error() { 0x80 } else { self as u8 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_name_themselves() {
        for &c in DisconnectReasonCode::ALL {
            assert_eq!(DisconnectReasonCode::from_code(c.code()), Some(c));
        }
        assert_eq!(DisconnectReasonCode::from_code(0x01), None);
        assert_eq!(
            DisconnectReasonCode::SessionTakenOver.to_string(),
            "Session taken over (0x8E)"
        );
        assert!(ConnectReasonCode::NotAuthorized.is_error());
        assert!(!PubAckReasonCode::NoMatchingSubscribers.is_error());
    }

    #[test]
    fn v5_connack_codes_map_to_v311_return_codes() {
        for &c in ConnectReturnCode::ALL {
            assert_eq!(ConnectReturnCode::from(ConnectReasonCode::from(c)), c);
        }
        assert_eq!(
            ConnectReturnCode::from(ConnectReasonCode::NotAuthorized).code(),
            0x05
        );
        assert_eq!(
            ConnectReturnCode::from(ConnectReasonCode::QuotaExceeded),
            ConnectReturnCode::ServerUnavailable
        );
    }
}
