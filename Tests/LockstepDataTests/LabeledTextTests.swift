import XCTest
@testable import LockstepData

final class LabeledTextTests: XCTestCase {
    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    func testStringLabelsAreSortedAndTextsPaddedAtTheStart() throws {
        let dataset = try LabeledTextDataset(trainBytes: bytes("spam\tbuy now\nham\thi\r\n\n eggs \tab\n"), trainSource: "train.tsv",
                                             testBytes: bytes("ham\tbuzz\n"), testSource: "test.tsv", sequenceLength: 4)
        XCTAssertEqual(dataset.classNames, ["eggs", "ham", "spam"])
        // Bytes of the training texts, ascending, after padding (0) and unknown (1): ' ' a b h i n o u w y → 2…11.
        XCTAssertEqual(dataset.vocabulary.bytes, bytes(" abhinouwy"))
        XCTAssertEqual(dataset.vocabulary.size, 12)
        XCTAssertEqual(dataset.train.sampleShape, [4])
        XCTAssertEqual(dataset.train.classCount, 3)
        XCTAssertEqual(dataset.train.targets, [2, 1, 0])
        // "buy now" keeps its first 4 bytes; "hi" and "ab" are padded in front.
        XCTAssertEqual(dataset.train.features, [4, 9, 11, 2, 0, 0, 5, 6, 0, 0, 3, 4])
        // 'z' never occurs in training: unknown id.
        XCTAssertEqual(dataset.test.features, [4, 9, 1, 1])
        XCTAssertEqual(dataset.test.targets, [1])

        let endPadded = try LabeledTextDataset(trainBytes: bytes("b\thi\na\tab\n"), trainSource: "t", testBytes: bytes("a\th\n"),
                                               sequenceLength: 3, padding: .end)
        XCTAssertEqual(endPadded.train.features, [4, 5, 0, 2, 3, 0])
        XCTAssertEqual(endPadded.test.features, [4, 0, 0])
    }

    func testIntegerLabelsAreClassIndices() throws {
        let dataset = try LabeledTextDataset(trainBytes: bytes("0\tx\n2\ty\n10\tz\n"), trainSource: "t",
                                             testBytes: bytes("1\tx\n"), sequenceLength: 1)
        // Numerically, not "0" < "10" < "2": 11 classes, 1 never seen in training but still a valid output.
        XCTAssertEqual(dataset.classNames.count, 11)
        XCTAssertEqual(dataset.train.targets, [0, 2, 10])
        XCTAssertEqual(dataset.test.targets, [1])
        assertDataError(try LabeledTextDataset(trainBytes: bytes("0\tx\n2\ty\n"), trainSource: "t", testBytes: bytes("1\tx\n3\ty\n"),
                                               testSource: "test.tsv", sequenceLength: 1),
                        names: "test.tsv", mentions: "line 2: label \"3\" is not one of the 3 classes")
    }

    func testHoldsOutEveryTenthLineWithoutTestFile() throws {
        // 25 lines, label = parity of i, text = decimal digits of i: a sorted-by-position file with a known answer.
        let corpus = (0..<25).map { "\($0 % 2 == 0 ? "even" : "odd")\t\($0)" }.joined(separator: "\n")
        let dataset = try LabeledTextDataset(trainBytes: bytes(corpus), trainSource: "c.tsv", sequenceLength: 2)
        XCTAssertEqual(dataset.train.count, 23)
        XCTAssertEqual(dataset.test.count, 2)
        // Held out: lines 10 and 20 (i = 9 and 19, both odd).
        XCTAssertEqual(dataset.test.targets, [1, 1])
        // "9" only occurs in the held-out lines "9" and "19", so it is an unknown byte there.
        XCTAssertNil(dataset.vocabulary.id(of: UInt8(ascii: "9")))
        let one = Float(dataset.vocabulary.id(of: UInt8(ascii: "1"))!), unknown = Float(LabeledTextDataset.unknownId)
        XCTAssertEqual(dataset.test.features, [0, unknown, one, unknown])
        for row in 0..<dataset.train.count {
            let last = dataset.train.features[row * 2 + 1]
            let lastDigit = Int(String(UnicodeScalar(dataset.vocabulary.byte(of: Int(last))!)))!
            XCTAssertEqual(Int(dataset.train.targets[row]), lastDigit % 2, "parity of the last digit is the label")
        }
    }

    func testReadsGzipFilesThroughLoad() throws {
        let directory = try TemporaryDirectory()
        let train = try directory.write("train.tsv.gz", bytes("pos\tgood\nneg\tbad\n"), gzip: true)
        let test = try directory.write("test.tsv", bytes("neg\tdog\n"))
        let dataset = try LabeledTextDataset.load(trainPath: train, testPath: test, sequenceLength: 3)
        XCTAssertEqual(dataset.classNames, ["neg", "pos"])
        XCTAssertEqual(dataset.train.targets, [1, 0])
        XCTAssertEqual(dataset.test.count, 1)
        assertDataError(try LabeledTextDataset.load(trainPath: directory.file("missing.tsv"), sequenceLength: 3),
                        names: "missing.tsv", mentions: "missing")
    }

    func testMalformedLinesNameFileAndLine() {
        func load(_ text: String, test: String? = nil, length: Int = 4) throws -> LabeledTextDataset {
            try LabeledTextDataset(trainBytes: bytes(text), trainSource: "train.tsv", testBytes: test.map(bytes),
                                   testSource: "test.tsv", sequenceLength: length)
        }
        assertDataError(try load("a\tx\nb\ty\nno tab here\n"), names: "train.tsv", mentions: "line 3: no tab")
        assertDataError(try load("a\tx\n\ty\n"), names: "train.tsv", mentions: "line 2: empty label")
        assertDataError(try load("a\tx\nb\ty\n", test: "c\tz\n"), names: "test.tsv", mentions: "line 1: label \"c\"")
        assertDataError(try load("a\tx\na\ty\n", test: "a\tz\n"), names: "train.tsv", mentions: "at least 2 classes")
        assertDataError(try load("a\tx\nb\ty\n"), names: "train.tsv", mentions: "fewer than 10 lines")
        assertDataError(try load("\n\n", test: "a\tz\n"), names: "train.tsv", mentions: "no label<TAB>text lines")
        assertDataError(try load("a\tx\nb\ty\n", test: "a\tz\n", length: 0), names: "train.tsv", mentions: "sequence length")
    }
}
