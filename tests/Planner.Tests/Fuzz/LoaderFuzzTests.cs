using Xunit;
using Xunit.Abstractions;

namespace Planner.Cli.Tests.Fuzz;

/// <summary>
/// Issue 22 item 5: FsCheck-generated malformed inputs for each loader, called through the CLI in-process
/// (<see cref="Commands.Cli.Run"/> with captured streams; the token file through <see cref="Commands.Cli.Guard"/>, as
/// <c>run</c> would start training on a valid one). 100 inputs per loader in the fast suite, 1,000 in the slow one;
/// docs/inputs.md has the counts.
/// </summary>
public sealed class LoaderFuzzTests(ITestOutputHelper output)
{
    public static TheoryData<string> Loaders => new(FuzzLoaders.Names);

    [Theory]
    [MemberData(nameof(Loaders))]
    public void A_hundred_malformed_inputs_are_each_accepted_or_refused_on_one_line(string loader) =>
        output.WriteLine(FuzzLoaders.Run(loader, 100).ToString());

    [Theory]
    [MemberData(nameof(Loaders))]
    [Trait("Category", "Slow")]
    public void A_thousand_malformed_inputs_are_each_accepted_or_refused_on_one_line(string loader) =>
        output.WriteLine(FuzzLoaders.Run(loader, 1000).ToString());
}
