using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Xunit;

namespace Planner.Cli.Tests;

/// <summary>
/// The shape of the sources under <c>src/</c> (issue 19): no file over <see cref="MaxFileLines"/> lines; no method,
/// constructor, operator, local function, accessor, expression-bodied member or field-initializer lambda whose body spans
/// more than <see cref="MaxBodyLines"/> lines without a reason written directly above it; no static mutable field without
/// a reason written directly above it.
/// </summary>
/// <remarks>
/// A long body's reason is a sentence beginning "Long:" in the comment directly above the member: either a doc comment's
/// <c>&lt;remarks&gt;Long: ...&lt;/remarks&gt;</c> or a line comment <c>// Long: ...</c> (for a local function or
/// a lambda, which carry no doc comment). A static mutable field's reason is a line comment <c>// Static: ...</c>.
/// </remarks>
public sealed class SourceShapeTests
{
    private const int MaxFileLines = 450;
    private const int MaxBodyLines = 80;

    [Fact]
    public void NoSourceFileIsOverTheLineLimit()
    {
        var offenders = SourceFiles()
            .Select(f => (f.Relative, Lines: File.ReadAllLines(f.Path).Length))
            .Where(f => f.Lines > MaxFileLines)
            .Select(f => $"{f.Relative}: {f.Lines} lines (limit {MaxFileLines})")
            .ToList();
        Assert.True(offenders.Count == 0, "Files over the limit:\n" + string.Join("\n", offenders));
    }

    [Fact]
    public void NoLongBodyWithoutAReason()
    {
        var offenders = new List<string>();
        foreach (var (path, relative) in SourceFiles())
        {
            var root = Parse(path);
            foreach (var (node, body, name) in Bodies(root))
            {
                int lines = LineSpan(body);
                if (lines > MaxBodyLines && !HasReason(node, "Long:"))
                    offenders.Add($"{relative}:{Line(node)} {name}: body of {lines} lines (limit {MaxBodyLines}; or write '// Long: <reason>' or '<remarks>Long: <reason></remarks>' above it)");
            }
        }
        Assert.True(offenders.Count == 0, "Long bodies without a reason:\n" + string.Join("\n", offenders));
    }

    [Fact]
    public void NoStaticMutableFieldWithoutAReason()
    {
        var offenders = new List<string>();
        foreach (var (path, relative) in SourceFiles())
        {
            foreach (var (node, name) in StaticMutables(Parse(path)))
            {
                if (!HasReason(node, "Static:"))
                    offenders.Add($"{relative}:{Line(node)} {name}: static mutable state (make it readonly, an instance member or a parameter; or write '// Static: <reason>' above it)");
            }
        }
        Assert.True(offenders.Count == 0, "Static mutable state:\n" + string.Join("\n", offenders));
    }

    [Fact]
    public void TheCheckFindsWhatItLooksFor()
    {
        string longBody = string.Concat(Enumerable.Repeat("        x++;\n", MaxBodyLines));
        var root = (CompilationUnitSyntax)CSharpSyntaxTree.ParseText(
            "class C\n{\n" +
            "    static int _count;\n" +
            "    // Static: a reason.\n    [System.ThreadStatic] static int _reasoned;\n" +
            "    static readonly int Fixed = 1;\n" +
            "    static int Counter { get; set; }\n" +
            "    void Short() { }\n" +
            "    void Unreasoned()\n    {\n        int x = 0;\n" + longBody + "    }\n" +
            "    /// <summary>Doc.</summary>\n    /// <remarks>Long: a reason.</remarks>\n    void Reasoned()\n    {\n        int x = 0;\n" + longBody + "    }\n" +
            "    void Outer()\n    {\n        Inner();\n        void Inner()\n        {\n            int x = 0;\n" + longBody + "        }\n    }\n" +
            "}\n").GetRoot();

        var longOnes = Bodies(root).Where(b => LineSpan(b.Body) > MaxBodyLines).ToList();
        Assert.Equal(["Unreasoned", "Reasoned", "Outer", "Outer.Inner"], longOnes.Select(b => b.Name));
        Assert.Equal(["Unreasoned", "Outer", "Outer.Inner"], longOnes.Where(b => !HasReason(b.Node, "Long:")).Select(b => b.Name));
        var statics = StaticMutables(root).ToList();
        Assert.Equal(["_count", "_reasoned", "Counter"], statics.Select(s => s.Name));
        Assert.Equal(["_count", "Counter"], statics.Where(s => !HasReason(s.Node, "Static:")).Select(s => s.Name));
    }

    /// <summary>Every .cs file under src/ but those in bin/ and obj/, with its path relative to src/.</summary>
    private static IEnumerable<(string Path, string Relative)> SourceFiles()
    {
        string src = Path.Combine(Path.GetDirectoryName(RepoFiles.Find("Planner.sln"))!, "src");
        var files = Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories)
            .Select(p => (Path: p, Relative: Path.GetRelativePath(src, p).Replace('\\', '/')))
            .Where(f => !f.Relative.Split('/').Any(part => part is "bin" or "obj"))
            .OrderBy(f => f.Relative, StringComparer.Ordinal)
            .ToList();
        Assert.NotEmpty(files);
        return files;
    }

    private static SyntaxNode Parse(string path) => CSharpSyntaxTree.ParseText(File.ReadAllText(path), path: path).GetRoot();

    /// <summary>Each member with a body: the node its reason is written above, the body, and a name to report.</summary>
    private static IEnumerable<(SyntaxNode Node, SyntaxNode Body, string Name)> Bodies(SyntaxNode root)
    {
        var members = new List<(SyntaxNode, SyntaxNode, string)>();
        foreach (var node in root.DescendantNodes())
        {
            SyntaxNode? body = node switch
            {
                BaseMethodDeclarationSyntax m => (SyntaxNode?)m.Body ?? m.ExpressionBody,
                LocalFunctionStatementSyntax f => (SyntaxNode?)f.Body ?? f.ExpressionBody,
                AccessorDeclarationSyntax a => (SyntaxNode?)a.Body ?? a.ExpressionBody,
                BasePropertyDeclarationSyntax p when p is PropertyDeclarationSyntax { ExpressionBody: { } e } => e,
                IndexerDeclarationSyntax { ExpressionBody: { } e } => e,
                // A lambda outside any member body (a field's or property's initializer); one inside a body counts
                // toward that body.
                AnonymousFunctionExpressionSyntax l when !l.Ancestors().Any(IsBodied) => l.Body,
                _ => null,
            };
            if (body is not null)
                members.Add((node, body, NameOf(node)));
        }
        return members;
    }

    private static bool IsBodied(SyntaxNode node) => node is BaseMethodDeclarationSyntax or LocalFunctionStatementSyntax
        or AccessorDeclarationSyntax or ArrowExpressionClauseSyntax;

    /// <summary>Static fields that are neither readonly nor const, and static auto-properties with a setter.</summary>
    private static IEnumerable<(SyntaxNode Node, string Name)> StaticMutables(SyntaxNode root)
    {
        foreach (var node in root.DescendantNodes())
        {
            if (node is BaseFieldDeclarationSyntax field && IsStatic(field.Modifiers)
                && !field.Modifiers.Any(m => m.IsKind(SyntaxKind.ReadOnlyKeyword) || m.IsKind(SyntaxKind.ConstKeyword)))
            {
                foreach (var v in field.Declaration.Variables)
                    yield return (field, v.Identifier.Text);
            }
            else if (node is PropertyDeclarationSyntax { AccessorList: { } accessors } property && IsStatic(property.Modifiers)
                && accessors.Accessors.Any(a => a.IsKind(SyntaxKind.SetAccessorDeclaration) && a.Body is null && a.ExpressionBody is null))
            {
                yield return (property, property.Identifier.Text);
            }
        }
    }

    private static bool IsStatic(SyntaxTokenList modifiers) => modifiers.Any(m => m.IsKind(SyntaxKind.StaticKeyword));

    /// <summary>
    /// Whether the comments directly above <paramref name="node"/> (its leading trivia, attributes included) carry
    /// a reason beginning with <paramref name="prefix"/>: a line comment "// prefix reason" or a doc comment's
    /// "&lt;remarks&gt;prefix reason".
    /// </summary>
    private static bool HasReason(SyntaxNode node, string prefix)
    {
        foreach (var trivia in node.GetLeadingTrivia())
        {
            string text = trivia.ToFullString();
            if (trivia.IsKind(SyntaxKind.SingleLineCommentTrivia) && Reasoned(text.TrimStart('/').TrimStart(), prefix))
                return true;
            if (trivia.IsKind(SyntaxKind.SingleLineDocumentationCommentTrivia))
            {
                int at = text.IndexOf("<remarks>" + prefix, StringComparison.Ordinal);
                if (at >= 0 && Reasoned(text[(at + "<remarks>".Length)..], prefix))
                    return true;
            }
        }
        return false;
    }

    // The prefix followed by some words of reason.
    private static bool Reasoned(string text, string prefix) =>
        text.StartsWith(prefix, StringComparison.Ordinal) && text[prefix.Length..].TrimStart().TakeWhile(c => c != '<').Count(char.IsLetter) >= 3;

    private static int LineSpan(SyntaxNode body)
    {
        var span = body.GetLocation().GetLineSpan();
        return span.EndLinePosition.Line - span.StartLinePosition.Line + 1;
    }

    private static int Line(SyntaxNode node) => node.GetLocation().GetLineSpan().StartLinePosition.Line + 1;

    /// <summary>The member's name, prefixed by its enclosing method's for a local function or an accessor.</summary>
    private static string NameOf(SyntaxNode node) => node switch
    {
        MethodDeclarationSyntax m => m.Identifier.Text,
        ConstructorDeclarationSyntax c => c.Identifier.Text + ".ctor",
        DestructorDeclarationSyntax d => "~" + d.Identifier.Text,
        OperatorDeclarationSyntax o => "operator " + o.OperatorToken.Text,
        ConversionOperatorDeclarationSyntax c => "operator " + c.Type,
        LocalFunctionStatementSyntax f => Enclosing(f) + f.Identifier.Text,
        AccessorDeclarationSyntax a => Enclosing(a) + a.Keyword.Text,
        PropertyDeclarationSyntax p => p.Identifier.Text,
        IndexerDeclarationSyntax => "this[]",
        BaseFieldDeclarationSyntax f => string.Join(", ", f.Declaration.Variables.Select(v => v.Identifier.Text)),
        BaseTypeDeclarationSyntax t => t.Identifier.Text,
        _ => Enclosing(node) + "lambda",
    };

    private static string Enclosing(SyntaxNode node)
    {
        var owner = node.Ancestors().FirstOrDefault(a => a is MemberDeclarationSyntax or LocalFunctionStatementSyntax);
        return owner is null ? "" : NameOf(owner) + ".";
    }
}
