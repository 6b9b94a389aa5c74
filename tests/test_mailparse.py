"""Inbound mail as the SMTP receiver hands it over (envelope and raw bytes): residents' replies
from the usual clients, auto-replies and bounce reports, and input that is simply broken.

The messages are written out byte for byte as the clients and mail servers send them, and the
assertions are about what a support agent sees: the new text, who wrote it, which notice it
answers."""

from __future__ import annotations

import random

import pytest

from channels.mailparse import (
    InboundEmail,
    delivery_id_from_message_id,
    message_ids,
    parse_inbound,
    reply_token,
)

DOMAIN = "mestni-glas.example"
TOKEN = "v1.aB3_x-9.Kq7Zp"
REPLY_TO = f"reply+{TOKEN}@{DOMAIN}"
NOTICE_ID = "n12.d345@mestni-glas.example"


def crlf(raw: bytes) -> bytes:
    """SMTP line endings, as the receiver gets them."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# -- replies from the usual clients -----------------------------------------------------------

GMAIL_SL = crlf(
    b"""Received: by mail-ed1-f41.google.com with SMTP id 4fb4d7f45d1cf-5d3e8f1b2a3
        for <reply+v1.aB3_x-9.Kq7Zp@mestni-glas.example>; Mon, 01 Dec 2026 00:12:31 -0800 (PST)
MIME-Version: 1.0
References: <n12.d345@mestni-glas.example>
In-Reply-To: <n12.d345@mestni-glas.example>
From: =?UTF-8?Q?Ana_Novak?= <Ana.Novak@GMAIL.COM>
Date: Mon, 1 Dec 2026 09:12:19 +0100
Message-ID: <CAK7Lq+Xy1=dQw4w9WgXcQ@mail.gmail.com>
Subject: Re: =?UTF-8?Q?Zapora_Pre=C5=A1ernove_ulice?=
To: Mestni glas <reply+v1.aB3_x-9.Kq7Zp@mestni-glas.example>
Content-Type: multipart/alternative; boundary="000000000000a1b2c3d4e5f60718"

--000000000000a1b2c3d4e5f60718
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

Hvala za obvestilo. Ali bo cesta zaprta tudi v soboto? Moram pripeljati
otroke v vrtec.

Dne pon., 1. dec. 2026 ob 08:00 je Mestni glas <obvestila@mestni-glas.exampl=
e>
napisal:

> Obve=C5=A1=C4=8Damo vas, da bo Pre=C5=A1ernova ulica zaprta od 2. do 5.
> decembra zaradi del na vodovodu.
>
> Mestni glas
>

--000000000000a1b2c3d4e5f60718
Content-Type: text/html; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

<div dir=3D"ltr">Hvala za obvestilo. Ali bo cesta zaprta tudi v soboto? Mor=
am pripeljati otroke v vrtec.</div><br><div class=3D"gmail_quote"><div dir=
=3D"ltr" class=3D"gmail_attr">Dne pon., 1. dec. 2026 ob 08:00 je Mestni glas=
 &lt;<a href=3D"mailto:obvestila@mestni-glas.example">obvestila@mestni-glas.=
example</a>&gt; napisal:<br></div><blockquote class=3D"gmail_quote" style=3D=
"margin:0px 0px 0px 0.8ex">Obve=C5=A1=C4=8Damo vas, da bo Pre=C5=A1ernova ul=
ica zaprta od 2. do 5. decembra zaradi del na vodovodu.</blockquote></div>

--000000000000a1b2c3d4e5f60718--
"""
)


def test_gmail_reply_in_slovenian_shows_only_the_new_text_and_the_token():
    mail = parse_inbound(GMAIL_SL, "Ana.Novak@gmail.com", [REPLY_TO])

    assert mail.text == (
        "Hvala za obvestilo. Ali bo cesta zaprta tudi v soboto? Moram pripeljati\notroke v vrtec."
    )
    assert "Prešernova ulica zaprta" in mail.full_text  # the quote is still there in full
    assert mail.sender == "Ana.Novak@gmail.com"
    assert mail.sender_name == "Ana Novak"
    assert mail.subject == "Re: Zapora Prešernove ulice"
    assert mail.reply_tokens == [TOKEN]  # envelope and To name the same one: listed once
    assert mail.in_reply_to == [NOTICE_ID]
    assert mail.message_id == "CAK7Lq+Xy1=dQw4w9WgXcQ@mail.gmail.com"
    assert (mail.auto, mail.bounce, mail.attachments) == (False, None, [])


OUTLOOK_EN = crlf(
    b"""From: John Smith <John.Smith@Outlook.COM>
To: "Mestni glas" <reply+v1.aB3_x-9.Kq7Zp@mestni-glas.example>
Subject: RE: Street cleaning on Slovenska cesta
Thread-Topic: Street cleaning on Slovenska cesta
Thread-Index: AQHbQ2x1c3RyZWV0Y2xlYW5pbmc=
Date: Mon, 1 Dec 2026 09:30:12 +0000
Message-ID: <AM9PR07MB7123ABCDEF0123456789@AM9PR07MB7123.eurprd07.prod.outlook.com>
References: <n12.d345@mestni-glas.example>
In-Reply-To: <n12.d345@mestni-glas.example>
Content-Language: en-GB
Content-Type: multipart/alternative;
\tboundary="_000_AM9PR07MB7123ABCDEF0123456789AM9PR07MB7123eurp_"
MIME-Version: 1.0

--_000_AM9PR07MB7123ABCDEF0123456789AM9PR07MB7123eurp_
Content-Type: text/plain; charset="Windows-1252"
Content-Transfer-Encoding: quoted-printable

Thanks for the heads-up =96 I will move the car tonight.

Kind regards,
John Smith

________________________________
From: Mestni glas <obvestila@mestni-glas.example>
Sent: Monday, December 1, 2026 8:00 AM
To: John Smith <john.smith@outlook.com>
Subject: Street cleaning on Slovenska cesta

Street cleaning will take place on Tuesday from 6:00 to 10:00. Please do not pa=
rk on Slovenska cesta.

--_000_AM9PR07MB7123ABCDEF0123456789AM9PR07MB7123eurp_
Content-Type: text/html; charset="Windows-1252"
Content-Transfer-Encoding: quoted-printable

<html><head><style>p.MsoNormal{margin:0cm;}</style></head><body>
<div>Thanks for the heads-up =96 I will move the car tonight.</div>
<div id=3D"divRplyFwdMsg"><b>From:</b> Mestni glas<br><b>Sent:</b> Monday</div>
</body></html>

--_000_AM9PR07MB7123ABCDEF0123456789AM9PR07MB7123eurp_--
"""
)


def test_outlook_reply_drops_the_from_sent_block():
    mail = parse_inbound(OUTLOOK_EN, "John.Smith@outlook.com", [REPLY_TO])

    assert mail.text == (
        "Thanks for the heads-up – I will move the car tonight.\n\nKind regards,\nJohn Smith"
    )
    assert "Please do not park on Slovenska cesta." in mail.full_text
    assert mail.sender == "John.Smith@outlook.com"
    assert mail.sender_name == "John Smith"
    assert mail.reply_tokens == [TOKEN]
    assert mail.references == [NOTICE_ID]


APPLE_MAIL = crlf(
    b"""Content-Type: text/plain;
\tcharset=utf-8
Content-Transfer-Encoding: quoted-printable
Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))
Subject: Re: Prekinitev dobave vode
From: Marko Kranjc <marko.kranjc@icloud.com>
In-Reply-To: <n7.d501@mestni-glas.example>
Date: Mon, 1 Dec 2026 10:02:44 +0100
Cc: sosed@example.si
Message-Id: <5F1C2D3E-4A5B-4C6D-8E9F-0A1B2C3D4E5F@icloud.com>
References: <n7.d501@mestni-glas.example>
To: Mestni glas <reply+Xy.7_z-Q@mestni-glas.example>
X-Mailer: Apple Mail (2.3774.600.62)

Ali bo voda pitna takoj po ponovni vzpostavitvi dobave ali jo moramo =
prekuhati?

Lep pozdrav,
Marko

> On 1 Dec 2026, at 08:00, Mestni glas <obvestila@mestni-glas.example> =
wrote:
>=20
> Zaradi popravila bo v torek med 8. in 12. uro prekinjena dobava vode.
>=20
"""
)


def test_apple_mail_reply_drops_the_on_wrote_quote():
    mail = parse_inbound(APPLE_MAIL, "marko.kranjc@icloud.com", ["reply+Xy.7_z-Q@" + DOMAIN])

    assert mail.text == (
        "Ali bo voda pitna takoj po ponovni vzpostavitvi dobave ali jo moramo prekuhati?\n"
        "\nLep pozdrav,\nMarko"
    )
    assert mail.reply_tokens == ["Xy.7_z-Q"]  # case kept: the hub checks its signature
    assert mail.sender_name == "Marko Kranjc"
    assert delivery_id_from_message_id(mail.in_reply_to[0]) == 501


APPLE_MAIL_DESKTOP_FLOWED = crlf(
    b"""From: Marko Kranjc <marko.kranjc@icloud.com>
To: Mestni glas <reply+Xy.7_z-Q@mestni-glas.example>
Subject: Re: Prekinitev dobave vode
Message-Id: <0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D@icloud.com>
In-Reply-To: <n7.d501@mestni-glas.example>
Content-Type: text/plain; charset=us-ascii; format=flowed; delsp=yes
Content-Transfer-Encoding: 7bit
Mime-Version: 1.0

Ali bo voda pitna takoj po ponovni vzpostavitvi dobave ali jo moramo \x20
prekuhati?

On 1 Dec 2026, at 08:00, Mestni glas <obvestila@mestni-glas.example> \x20
wrote:

> Zaradi popravila bo v torek med 8. in 12. uro prekinjena dobava \x20
> vode.
"""
)


def test_format_flowed_lines_are_joined_and_the_wrapped_attribution_found():
    mail = parse_inbound(APPLE_MAIL_DESKTOP_FLOWED)

    assert mail.text == (
        "Ali bo voda pitna takoj po ponovni vzpostavitvi dobave ali jo moramo prekuhati?"
    )
    assert "> Zaradi popravila bo v torek med 8. in 12. uro prekinjena dobava vode." in (
        mail.full_text
    )


REPLY_TO_FROM_ADDRESS = crlf(
    b"""Return-Path: <mojca.zupan@siol.net>
Delivered-To: obvestila@mestni-glas.example
From: "Zupan, Mojca" <mojca.zupan@SIOL.NET>
To: Mestni glas <obvestila@mestni-glas.example>
Subject: Re: Odvoz kosovnih odpadkov
Date: Tue, 2 Dec 2026 17:45:00 +0100
Message-ID: <000001db1234$56789abc$def01234$@siol.net>
In-Reply-To: <n21.d9001@mestni-glas.example>
References: <n20.d8999@mestni-glas.example>
 <n21.d9001@mestni-glas.example>
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 8bit
X-Mailer: Microsoft Outlook 16.0

"""
    + "Ali odvoz velja tudi za Tržaško cesto?\n".encode()
)


def test_reply_without_token_is_threaded_by_in_reply_to_and_references():
    mail = parse_inbound(REPLY_TO_FROM_ADDRESS, "mojca.zupan@siol.net", [f"obvestila@{DOMAIN}"])

    assert mail.reply_tokens == []
    assert mail.in_reply_to == ["n21.d9001@mestni-glas.example"]
    assert mail.references == ["n20.d8999@mestni-glas.example", "n21.d9001@mestni-glas.example"]
    assert [delivery_id_from_message_id(i) for i in mail.references] == [8999, 9001]
    assert mail.sender == "mojca.zupan@siol.net"
    assert mail.sender_name == "Zupan, Mojca"
    assert mail.text == "Ali odvoz velja tudi za Tržaško cesto?"


HTML_ONLY = crlf(
    b"""From: Petra Horvat <petra@example.si>
To: reply+v1.aB3_x-9.Kq7Zp@mestni-glas.example
Subject: Re: Voda ni pitna
Message-ID: <ab12cd34@webmail.example.si>
In-Reply-To: <n12.d345@mestni-glas.example>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

PGh0bWw+PGhlYWQ+PHRpdGxlPlJlOiBWb2RhPC90aXRsZT48c3R5bGU+Ym9keSB7IGZvbnQtZmFt
aWx5OiBBcmlhbDsgfTwvc3R5bGU+PC9oZWFkPjxib2R5PjxkaXY+S2RhaiBibyB2b2RhIHNwZXQg
cGl0bmE/PGJyPlZzaSAmYW1wOyBvdHJvY2kgPGI+xb5lbGltbzwvYj4gdmVkZXRpLjwvZGl2Pjxk
aXY+TGVwIHBvemRyYXYsPGJyPlBldHJhPC9kaXY+PHNjcmlwdD5hbGVydCgneCcpPC9zY3JpcHQ+
PGRpdiBjbGFzcz0iZ21haWxfcXVvdGUiPk9uIE1vbiwgRGVjIDEsIDIwMjYgYXQgODowMCBBTSBN
ZXN0bmkgZ2xhcyAmbHQ7b2J2ZXN0aWxhQG1lc3RuaS1nbGFzLmV4YW1wbGUmZ3Q7IHdyb3RlOjxi
cj48YmxvY2txdW90ZT48cD5Wb2RhIG5pIHBpdG5hLCBwcmVrdWhhanRlIGpvLjwvcD48L2Jsb2Nr
cXVvdGU+PC9kaXY+PC9ib2R5PjwvaHRtbD4K
"""
)


def test_html_only_reply_is_converted_to_text():
    mail = parse_inbound(HTML_ONLY)

    assert mail.text == "Kdaj bo voda spet pitna?\nVsi & otroci želimo vedeti.\nLep pozdrav,\nPetra"
    assert "Voda ni pitna, prekuhajte jo." in mail.full_text
    for leftover in ("<div", "<br", "<b>", "font-family", "alert", "&amp;", "Re: Voda"):
        assert leftover not in mail.full_text
    assert mail.reply_tokens == [TOKEN]


# -- auto-replies -----------------------------------------------------------------------------

VACATION = crlf(
    b"""Return-Path: <ana.novak@example.si>
From: Ana Novak <ana.novak@example.si>
To: reply+v1.aB3_x-9.Kq7Zp@mestni-glas.example
Subject: Odsotnost: Zapora ceste
Auto-Submitted: auto-replied (vacation)
Message-ID: <vacation-1764576000@example.si>
In-Reply-To: <n12.d345@mestni-glas.example>
Content-Type: text/plain; charset=utf-8

Do 8. decembra sem na dopustu. V nujnih primerih pokli=C4=8Dite sodelavca.
"""
)


def test_vacation_auto_reply_is_marked_auto():
    mail = parse_inbound(VACATION, "ana.novak@example.si", [REPLY_TO])

    assert mail.auto is True
    assert mail.bounce is None
    assert mail.reply_tokens == [TOKEN]  # still says which notice it answers


@pytest.mark.parametrize(
    ("headers", "auto"),
    [
        (b"Auto-Submitted: auto-generated", True),
        (b"Auto-Submitted: no", False),
        (b"X-Autoreply: yes", True),
        (b"X-Autorespond: Out of office", True),
        (b"Precedence: bulk", True),
        (b"Precedence: junk", True),
        (b"Precedence: auto_reply", True),
        (b"X-Auto-Response-Suppress: All\nSubject: Samodejni odgovor: Zapora ceste", True),
        (b"X-Auto-Response-Suppress: DR, OOF\nSubject: Automatic reply: Road closure", True),
        (b"X-Auto-Response-Suppress: All\nSubject: Re: Zapora ceste", False),
        (b"Subject: Re: Zapora ceste", False),
    ],
)
def test_auto_reply_headers(headers, auto):
    raw = crlf(
        b"From: ana.novak@example.si\nTo: reply+abc@mestni-glas.example\n"
        + headers
        + b"\nContent-Type: text/plain\n\nI am out of the office.\n"
    )
    assert parse_inbound(raw, "ana.novak@example.si", ["reply+abc@" + DOMAIN]).auto is auto


def test_null_sender_without_a_report_is_auto():
    raw = crlf(b"From: robot@example.si\nSubject: Hello\n\nGenerated.\n")

    assert parse_inbound(raw, "<>", [REPLY_TO]).auto is True
    assert parse_inbound(raw, "robot@example.si", [REPLY_TO]).auto is False


# -- bounces ----------------------------------------------------------------------------------

POSTFIX_DSN = crlf(
    b"""Return-Path: <>
Received: by mx.mestni-glas.example (Postfix)
\tid 6D9A81C0C; Mon,  1 Dec 2026 08:00:05 +0100 (CET)
Date: Mon,  1 Dec 2026 08:00:05 +0100 (CET)
From: MAILER-DAEMON@mx.mestni-glas.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounce+77@mestni-glas.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4F2A81C0B.1764572405/mx.mestni-glas.example"
Content-Transfer-Encoding: 8bit
Message-Id: <20261201070005.6D9A81C0C@mx.mestni-glas.example>

This is a MIME-encapsulated message.

--4F2A81C0B.1764572405/mx.mestni-glas.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.mestni-glas.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<ana.novak@example.si>: host mail.example.si[192.0.2.10] said: 550 5.1.1
    <ana.novak@example.si>: Recipient address rejected: User unknown in virtual
    mailbox table (in reply to RCPT TO command)

--4F2A81C0B.1764572405/mx.mestni-glas.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.mestni-glas.example
X-Postfix-Queue-ID: 4F2A81C0B
X-Postfix-Sender: rfc822; bounce+77@mestni-glas.example
Arrival-Date: Mon,  1 Dec 2026 08:00:01 +0100 (CET)

Final-Recipient: rfc822; ana.novak@example.si
Original-Recipient: rfc822;ana.novak@example.si
Action: failed
Status: 5.1.1
Remote-MTA: dns; mail.example.si
Diagnostic-Code: smtp; 550 5.1.1 <ana.novak@example.si>: Recipient address
    rejected: User unknown in virtual mailbox table

--4F2A81C0B.1764572405/mx.mestni-glas.example
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <bounce+77@mestni-glas.example>
From: Mestni glas <obvestila@mestni-glas.example>
To: ana.novak@example.si
Reply-To: reply+v1.aB3_x-9.Kq7Zp@mestni-glas.example
Subject: Zapora ceste
Message-ID: <n3.d77@mestni-glas.example>

--4F2A81C0B.1764572405/mx.mestni-glas.example--
"""
)


def test_rfc3464_hard_bounce_names_the_delivery_and_is_permanent():
    mail = parse_inbound(POSTFIX_DSN, "<>", [f"bounce+77@{DOMAIN}"])

    bounce = mail.bounce
    assert bounce is not None
    assert bounce.delivery_id == 77
    assert (bounce.action, bounce.status, bounce.permanent) == ("failed", "5.1.1", True)
    assert bounce.recipient == "ana.novak@example.si"
    assert bounce.diagnostic == (
        "550 5.1.1 <ana.novak@example.si>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    assert mail.auto is False  # Auto-Submitted and "<>", but a bounce to act on, not to ignore
    assert mail.reply_tokens == []  # the Reply-To of the attached original is not this mail's
    assert mail.full_text.startswith("This is the mail system at host mx.mestni-glas.example.")


def test_bounce_to_a_rewritten_address_falls_back_to_the_original_message_id():
    raw = POSTFIX_DSN.replace(b"To: bounce+77@", b"To: bounces@")
    mail = parse_inbound(raw, "<>", [f"bounces@{DOMAIN}"])

    assert mail.bounce is not None
    assert mail.bounce.delivery_id == 77  # from <n3.d77@…> in the text/rfc822-headers part


DELAYED_DSN = crlf(
    b"""Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@mx.mestni-glas.example>
To: obvestila@mestni-glas.example
Subject: Delayed Mail (still being retried)
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type="delivery-status";
 boundary="=_delayed_5B3C1C0D"

--=_delayed_5B3C1C0D
Content-Type: text/plain; charset=utf-8

This is the mail system at host mx.mestni-glas.example.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

--=_delayed_5B3C1C0D
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.mestni-glas.example
Arrival-Date: Mon,  1 Dec 2026 08:00:01 +0100 (CET)

Final-Recipient: rfc822; marko@example.net
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.example.net[198.51.100.7]:25:
    Connection timed out
Will-Retry-Until: Sat,  6 Dec 2026 08:00:01 +0100 (CET)

--=_delayed_5B3C1C0D
Content-Type: message/rfc822

From: Mestni glas <obvestila@mestni-glas.example>
To: marko@example.net
Subject: Zapora ceste
Message-ID: <n4.d78@mestni-glas.example>
Content-Type: text/plain; charset=utf-8

Pre=C5=A1ernova ulica bo zaprta.

--=_delayed_5B3C1C0D--
"""
)


def test_delayed_dsn_is_temporary():
    mail = parse_inbound(DELAYED_DSN, "<>", [f"obvestila@{DOMAIN}"])

    bounce = mail.bounce
    assert bounce is not None
    assert (bounce.action, bounce.status, bounce.permanent) == ("delayed", "4.4.1", False)
    assert bounce.delivery_id == 78  # from the attached message/rfc822 original
    assert bounce.recipient == "marko@example.net"
    assert bounce.diagnostic == "connect to mx.example.net[198.51.100.7]:25: Connection timed out"
    assert mail.attachments == []  # the returned original is part of the report, not a file


QMAIL_BOUNCE = crlf(
    b"""Return-Path: <>
From: MAILER-DAEMON@mail.example.net
To: bounce+79@mestni-glas.example
Subject: failure notice

Hi. This is the qmail-send program at mail.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<marko@example.net>:
192.0.2.25 does not like recipient.
Remote host said: 550 5.1.1 <marko@example.net>... User unknown
Giving up on 192.0.2.25.

--- Below this line is a copy of the message.

Return-Path: <bounce+79@mestni-glas.example>
Message-ID: <n5.d79@mestni-glas.example>
Subject: Zapora ceste
"""
)


def test_plain_text_bounce_from_mailer_daemon_is_read_best_effort():
    bounce = parse_inbound(QMAIL_BOUNCE, "<>", [f"bounce+79@{DOMAIN}"]).bounce

    assert bounce is not None
    assert (bounce.delivery_id, bounce.status, bounce.permanent) == (79, "5.1.1", True)
    assert bounce.recipient == "marko@example.net"
    assert bounce.diagnostic == "Remote host said: 550 5.1.1 <marko@example.net>... User unknown"


def test_plain_text_bounce_that_says_it_is_temporary():
    raw = crlf(
        b"From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\n"
        b"Subject: Warning: could not send message for past 4 hours\n\n"
        b"This is a temporary failure. The mail system will retry for 5 days.\n"
    )
    bounce = parse_inbound(raw, "<>", [f"bounce+80@{DOMAIN}"]).bounce

    assert bounce is not None
    assert (bounce.delivery_id, bounce.action, bounce.permanent) == (80, "delayed", False)


# -- text: quotes and signatures --------------------------------------------------------------


def _plain(body: str, charset: str = "utf-8") -> bytes:
    return crlf(
        b"From: Ana <ana@example.si>\nTo: reply+abc@mestni-glas.example\n"
        b"Subject: Re: obvestilo\n"
        b"MIME-Version: 1.0\nContent-Type: text/plain; charset=" + charset.encode() + b"\n"
        b"Content-Transfer-Encoding: 8bit\n\n"
    ) + body.replace("\n", "\r\n").encode(charset)


def test_signature_is_removed_from_text_but_kept_in_full_text():
    mail = parse_inbound(_plain("Pri nas je cesta že očiščena.\n\n-- \nAna\n041 123 456\n"))

    assert mail.text == "Pri nas je cesta že očiščena."
    assert mail.full_text == "Pri nas je cesta že očiščena.\n\n-- \nAna\n041 123 456"


@pytest.mark.parametrize(
    "trailer",
    ["Sent from my iPhone", "Poslano iz mojega iPhona", "Poslano iz mojega Samsung Galaxy"],
)
def test_mobile_signature_and_ios_quote_are_removed(trailer):
    body = (
        "Hvala, bom doma.\n\n"
        f"{trailer}\n\n"
        "> On 1 Dec 2026, at 08:00, Mestni glas <obvestila@mestni-glas.example> wrote:\n"
        ">\n"
        "> \ufeffZaradi popravila bo v torek prekinjena dobava vode.\n"
    )
    assert parse_inbound(_plain(body)).text == "Hvala, bom doma."


def test_a_sentence_that_starts_like_a_mobile_signature_stays():
    body = "Sent from my office the photo yesterday, did you get it?\nAna\n"

    assert parse_inbound(_plain(body)).text == (
        "Sent from my office the photo yesterday, did you get it?\nAna"
    )


def test_answer_written_below_the_quote_is_kept():
    body = (
        "On Mon, Dec 1, 2026 at 8:00 AM Mestni glas <obvestila@mestni-glas.example> wrote:\n"
        "> Ali je pri vas kanalizacija zamašena?\n\n"
        "Da, od včeraj.\n"
    )
    assert parse_inbound(_plain(body)).text == "Da, od včeraj."


def test_a_resident_quoting_in_their_own_words_is_not_cut():
    body = "On Monday my neighbour wrote:\nthe bins were not emptied.\nCan you check?\n"

    assert parse_inbound(_plain(body)).text == body.strip()


def test_original_message_separator_cuts_the_rest():
    body = (
        "Ne morem priti.\n\n-----Original Message-----\nFrom: Mestni glas\n"
        "Sent: Monday, December 1, 2026 8:00\n\nSestanek bo ob 18. uri.\n"
    )
    assert parse_inbound(_plain(body)).text == "Ne morem priti."


def test_reply_with_only_quoted_text_has_no_new_text():
    body = (
        "Dne pon., 1. dec. 2026 ob 08:00 je Mestni glas <obvestila@mestni-glas.example> "
        "napisal(a):\n> Obveščamo vas o zapori ceste.\n>\n> Mestni glas\n"
    )
    mail = parse_inbound(_plain(body))

    assert mail.text == ""
    assert "Obveščamo vas o zapori ceste." in mail.full_text


def test_iso_8859_2_body_and_subject_are_decoded():
    raw = crlf(
        b"From: =?ISO-8859-2?Q?Bo=B9tjan_=C8ater?= <bostjan@example.si>\n"
        b"To: reply+abc@mestni-glas.example\n"
        b"Subject: =?ISO-8859-2?Q?Re:_=E8i=B9=E8enje_snega?=\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=ISO-8859-2\n"
        b"Content-Transfer-Encoding: 8bit\n\n"
        b"Prosim, po\xe8istite sneg pred vrtcem na \xc8ernetovi ulici.\n"
    )
    mail = parse_inbound(raw)

    assert mail.text == "Prosim, počistite sneg pred vrtcem na Černetovi ulici."
    assert mail.subject == "Re: čiščenje snega"
    assert mail.sender_name == "Boštjan Čater"


@pytest.mark.parametrize(
    ("charset", "body", "expected"),
    [
        (b"", "Počistite sneg.".encode(), "Počistite sneg."),  # no charset, UTF-8 bytes
        (b"; charset=x-unknown-cs", "Počistite sneg.".encode(), "Počistite sneg."),
        (b"; charset=utf-8", b"Po\xe8istite sneg.", "Po\xe8istite sneg."),  # Latin-2 as UTF-8
        (b"; charset=us-ascii", "Očiščeno \xff".encode() + b"\xff", "Očiščeno \xff\ufffd"),
    ],
)
def test_wrong_or_missing_charset_falls_back(charset, body, expected):
    raw = crlf(b"From: a@example.si\nContent-Type: text/plain" + charset + b"\n\n") + body
    assert parse_inbound(raw).text == expected


# -- structure, attachments, limits -----------------------------------------------------------

PHOTO_REPLY = crlf(
    b"""From: Jure Kos <jure@example.si>
To: reply+abc@mestni-glas.example
Subject: Re: =?utf-8?q?Po=C5=A1kodovana_cesta?=
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

VHVkaSBwcmkgbmFzIGplIGx1a25qYSwgZm90b2dyYWZpamEgamUgdiBwcmlsb2dpLg==

--inner
Content-Type: text/html; charset=utf-8

<p>Tudi pri nas je luknja, fotografija je v prilogi.</p>
--inner--

--outer
Content-Type: image/jpeg; name="luknja.jpg"
Content-Disposition: attachment;
 filename*=utf-8''luknja%20pred%20%C5%A1olo.jpg
Content-Transfer-Encoding: base64

/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////
--outer
Content-Type: application/pdf
Content-Disposition: attachment; filename="zapisnik.pdf"

%PDF-1.4 broken
--outer--
"""
)


def test_attachments_are_listed_and_kept_out_of_the_text():
    mail = parse_inbound(PHOTO_REPLY)

    assert mail.text == "Tudi pri nas je luknja, fotografija je v prilogi."
    assert mail.attachments == [
        ("luknja pred šolo.jpg", "image/jpeg", 57),
        ("zapisnik.pdf", "application/pdf", 15),
    ]


def test_huge_body_is_capped():
    raw = crlf(b"From: a@example.si\nSubject: x\n\n") + b"Zelo dolgo besedilo. " * 20_000
    mail = parse_inbound(raw)

    assert len(mail.full_text) == 100_000
    assert mail.text == mail.full_text


def test_message_without_from_or_message_id_gets_a_stable_id():
    raw = crlf(b"Subject: brez naslovnika\n\nZdravo.\n")
    first, again = parse_inbound(raw), parse_inbound(raw)
    other = parse_inbound(raw + b"!")

    assert first.message_id == again.message_id != other.message_id
    assert first.sender == ""
    assert first.text == "Zdravo."
    assert parse_inbound(raw, "ana@Example.SI").sender == "ana@example.si"


@pytest.mark.parametrize(
    "raw",
    [
        bytes(range(256)) * 8,
        b"\xff\xfe\x00\x00garbage\r\n\r\n\r\n",
        b"\n",
        b"From: <<<@@>>>\r\nTo: ,,,@\r\nSubject: =?utf-8?B?broken=?=\r\n"
        b"Message-ID: <<>>\r\nIn-Reply-To: <\r\nReferences: >>> <<<\r\n\r\nbody\r\n",
        b"Content-Type: multipart/mixed\r\n\r\n--x\r\nno boundary param\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain;"
        b" charset=utf-7777\r\nContent-Transfer-Encoding: base64\r\n\r\n!!not base64!!\r\n",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\nStatus\r\n--r",
        b'Content-Type: text/plain; charset="\xc3\x28"\r\nFrom: \xc3\x28 <x@\xff>\r\n\r\n\xff',
        b"Content-Type: text/html\r\n\r\n<a <b <!-- <script>" + b"<div " * 1000,
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" * 2000,
    ],
)
def test_garbage_does_not_raise(raw):
    assert isinstance(parse_inbound(raw, "<>", ["x"]), InboundEmail)


def test_random_bytes_do_not_raise():
    rng = random.Random(3464)
    for _ in range(200):
        raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 600)))
        parse_inbound(b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n" + raw)
        parse_inbound(raw)


def test_empty_bytes_are_a_caller_error():
    with pytest.raises(ValueError):
        parse_inbound(b"")


# -- helpers ----------------------------------------------------------------------------------


def test_message_ids():
    assert message_ids("<a@b> <c@d>") == ["a@b", "c@d"]
    assert message_ids("<a@b>\r\n\t<c@d>, <a@b>") == ["a@b", "c@d"]
    assert message_ids("<a@b> (Ana's message of Monday)") == ["a@b"]
    assert message_ids("a@b") == ["a@b"]
    assert message_ids("") == []


@pytest.mark.parametrize(
    ("message_id", "delivery_id"),
    [
        ("n12.d345@x", 345),
        ("<n12.d345@mestni-glas.example>", 345),
        ("CAK7Lq+Xy1@mail.gmail.com", None),
        ("n12.dx@x", None),
        ("", None),
    ],
)
def test_delivery_id_from_message_id(message_id, delivery_id):
    assert delivery_id_from_message_id(message_id) == delivery_id


@pytest.mark.parametrize(
    ("address", "token"),
    [
        ("reply+TOKEN@x", "TOKEN"),
        ("Reply+aB.c_d-9@mestni-glas.example", "aB.c_d-9"),
        ("Mestni glas <reply+Tk1@mestni-glas.example>", "Tk1"),
        ("<reply+Tk1@mestni-glas.example>", "Tk1"),
        ("reply@x", None),
        ("reply+@x", None),
        ("reply+bad/token@x", None),
        ("bounce+77@x", None),
        ("noreply+abc@x", None),
        ("", None),
    ],
)
def test_reply_token(address, token):
    assert reply_token(address) == token
