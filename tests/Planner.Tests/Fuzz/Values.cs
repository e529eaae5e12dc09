using System.Globalization;
using FsCheck;
using FsCheck.Fluent;

namespace Planner.Cli.Tests.Fuzz;

/// <summary>Values that put a loader's checks to the test, as they would be written in a file: negative, zero, huge,
/// not-a-number and fractional numbers, wrong types, empty and odd text.</summary>
public static class Values
{
    /// <summary>Numbers at and beyond the edges, as text.</summary>
    public static readonly string[] Numbers =
    [
        "0", "-1", "1", "2", "3", "-0", "0.5", "1.5", "-2.5", "1e-320", "1e308", "-1e308", "1e400", "-1e400", "2147483647", "2147483648",
        "-2147483649", "4294967296", "9223372036854775807", "9223372036854775808", "18446744073709551616", "1e20", "65536", "100000000", "7",
    ];

    /// <summary>Values of other types and odd text, as JSON.</summary>
    public static readonly string[] OtherJson =
    [
        "null", "true", "false", "\"\"", "\"x\"", "\"NaN\"", "\"-1\"", "\"1e400\"", "[]", "{}", "[1, 2]", "{\"a\": 1}", "\"\\u0000\"", "\"\\n\"",
        "\"" + new string('x', 5000) + "\"", "\"../../../../etc/passwd\"", "\"/\"", "\"é\"", "\"fp8\"", "\"none\"", "\"full\"",
    ];

    /// <summary>Tokens that are not JSON values (a careless writer's NaN and infinities).</summary>
    public static readonly string[] NotJson = ["NaN", "Infinity", "-Infinity", "nan", "inf", "undefined", "01", "+1", ".5", "0x10", "'x'"];

    /// <summary>Scalars of other kinds, as YAML or CSV text.</summary>
    public static readonly string[] OtherText =
    [
        "", " ", "~", "null", "true", "false", "yes", "x", "NaN", ".nan", ".inf", "-.inf", "nan", "Infinity", "0x10", "1_000", "1,5", "[]", "{}",
        "[1, 2]", "{a: 1}", "'quoted'", "\"quoted\"", "\"unterminated", "&anchor x", "*alias", "!!binary AAAA", "é", "-", "? x", "|", ">",
        "%YAML", "@", "`", "#comment", new string('9', 400),
    ];

    /// <summary>A number as JSON or YAML writes it: one of the edges or a valid one scaled.</summary>
    public static Gen<string> Number(double? valid = null) => Gen.OneOf(
        Gen.Elements(Numbers),
        Gen.Elements(-1000.0, -1.0, -0.001, 0.0, 0.001, 0.5, 2.0, 10.0, 1e6, 1e12)
            .Select(f => ((valid ?? 1) * f).ToString("R", CultureInfo.InvariantCulture)));

    /// <summary>Any value in JSON: a number, another type, or a token that is not JSON.</summary>
    public static Gen<string> Json(double? valid = null) =>
        Gen.Frequency((4, Number(valid)), (4, Gen.Elements(OtherJson)), (1, Gen.Elements(NotJson)));

    /// <summary>Any scalar in YAML or CSV: a number or other text.</summary>
    public static Gen<string> Text(double? valid = null) => Gen.Frequency((4, Number(valid)), (4, Gen.Elements(OtherText)));
}
